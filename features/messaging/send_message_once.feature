Feature: Send a message once, even when the app retries
  Phones lose their connection in the middle of sending, and apps then send the
  same message again. Each message carries an id chosen by the app, so a retry
  never shows up twice and never takes a second place in the conversation.

  Background:
    Given these people use Chat4All: ana, bruno
    And ana has a private conversation with bruno

  Scenario: A retry after a lost answer is accepted only once
    When ana sends "Are we still on for lunch?" as message M1
    And ana's app sends message M1 "Are we still on for lunch?" again
    Then both attempts get the same answer
    And bruno sees the messages "Are we still on for lunch?" in this order
    And 1 new-message notification has gone out

  Scenario: The message after a retry comes right after it
    When ana sends "first" as message M1
    And ana's app sends message M1 "first" again
    And ana sends "second" as message M2
    Then message M2 is number 2 in the conversation
    And bruno sees the messages "first", "second" in this order

  Scenario: A retry with a different text is refused
    When ana sends "See you at 12" as message M1
    And ana's app sends message M1 "See you at 1" again
    Then the retry is refused because "message_id was already used for a different message"
    And bruno sees the messages "See you at 12" in this order
    And 1 new-message notification has gone out
