Feature: Read receipts
  The sender of a message sees when its recipient has read it. Opening a
  conversation reads everything up to the last message shown, and phones
  report the same receipt late or twice without changing what happened.

  Background:
    Given these people use Chat4All: ana, bruno
    And ana has a private conversation with bruno

  Scenario: An unread message shows as sent
    Given ana has sent "Lunch at 12?"
    Then ana sees "Lunch at 12?" as SENT

  Scenario: The sender sees that the recipient read the message
    Given ana has sent "Lunch at 12?"
    When bruno reads "Lunch at 12?" at 09:05
    Then ana sees "Lunch at 12?" as READ
    And ana sees that bruno read "Lunch at 12?" at 09:05

  Scenario: Reading a later message reads the earlier ones
    Given ana has sent "one", "two", "three"
    When bruno reads "two" at 09:05
    Then ana sees "one" as READ
    And ana sees "two" as READ
    And ana sees "three" as SENT

  Scenario: A duplicate receipt changes nothing
    Given ana has sent "Lunch at 12?"
    And bruno reads "Lunch at 12?" at 09:05
    When bruno's phone reports reading "Lunch at 12?" again at 09:30
    Then the receipt says bruno read "Lunch at 12?" at 09:05
    And ana sees that bruno read "Lunch at 12?" at 09:05
    And no new read notification has gone out

  Scenario: A late receipt for an earlier message changes nothing
    Given ana has sent "one", "two"
    And bruno reads "two" at 09:05
    When bruno's phone reports reading "one" again at 09:30
    Then the receipt says bruno read "one" at 09:05
    And no new read notification has gone out

  Scenario: Only a recipient can mark a message read
    Given ana has sent "Lunch at 12?"
    When ana tries to mark "Lunch at 12?" as read
    Then she is not allowed
    And ana sees "Lunch at 12?" as SENT
