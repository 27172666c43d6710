Feature: Read a conversation's history
  Members read what was said in the order it was said, the latest messages
  first and older ones page by page, and only the messages meant for them.

  Background:
    Given these people use Chat4All: ana, bruno, carla
    And ana has a group with bruno, carla
    And ana has sent "message 1", "message 2", "message 3", "message 4", "message 5"

  Scenario: Messages come in the order they were sent
    When bruno reads the history
    Then bruno sees the messages "message 1", "message 2", "message 3", "message 4", "message 5" in this order
    And there are no more messages

  Scenario: The latest messages come first, older ones page by page
    When bruno reads the history 2 messages at a time
    Then bruno sees the messages "message 4", "message 5" in this order
    And there are more messages
    When bruno reads the next page
    Then bruno sees the messages "message 2", "message 3" in this order
    When bruno reads the next page
    Then bruno sees the messages "message 1" in this order
    And there are no more messages

  Scenario: Catching up from the last message seen
    When bruno reads 2 messages after "message 1"
    Then bruno sees the messages "message 2", "message 3" in this order
    And there are more messages
    When bruno reads the next page
    Then bruno sees the messages "message 4", "message 5" in this order
    And there are no more messages

  Scenario: A message sent to some members only is not shown to the others
    Given ana has sent "just for carla" to carla only
    When bruno reads the history
    Then bruno does not see "just for carla"
    When carla reads the history
    Then carla sees the messages "message 1", "message 2", "message 3", "message 4", "message 5", "just for carla" in this order
