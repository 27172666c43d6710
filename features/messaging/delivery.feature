Feature: Messages reach people on their platforms
  A message to someone who uses Telegram reaches their Telegram exactly once and in
  the order it was sent, even when a delivery worker crashes or Telegram is down for
  a while. The sender sees it delivered when Telegram confirms it.

  Background:
    Given these people use Chat4All: ana, bruno
    And bruno uses Telegram
    And ana has a private conversation with bruno

  Scenario: A message reaches the recipient's Telegram once and shows as delivered
    Given ana has sent "Olá!"
    When Chat4All delivers what is waiting
    Then bruno's Telegram received "Olá!"
    When Telegram confirms that bruno's phone got "Olá!"
    Then ana sees "Olá!" delivered on telegram

  Scenario: A worker that crashes mid-send does not send the message twice
    Given ana has sent "Olá!"
    And a delivery worker crashed right after Telegram accepted "Olá!"
    When Chat4All delivers what is waiting
    Then bruno's Telegram received "Olá!"

  Scenario: Messages wait while Telegram is down, then arrive in order
    Given Telegram is down
    And ana has sent "one", "two", "three"
    When Chat4All delivers what is waiting
    Then bruno's Telegram received nothing yet
    And ana sees "one" as SENT
    When Telegram is back and the pause is over
    And Chat4All delivers what is waiting
    Then bruno's Telegram received "one", "two", "three"
