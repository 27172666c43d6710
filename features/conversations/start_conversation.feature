Feature: Start a conversation
  People talk one to one in a private conversation, or with several others in a group.
  Anyone can be invited by their Chat4All username, or by their WhatsApp, Instagram,
  Messenger or Telegram account even if they have never used Chat4All.

  Background:
    Given these people use Chat4All: ana, bruno, carla, dora

  Scenario: Ana starts a private conversation with Bruno
    When ana starts a private conversation with bruno
    Then the conversation is started
    And its members are ana and bruno

  Scenario: Ana starts a private conversation with someone who is only on WhatsApp
    When ana starts a private conversation with whatsapp:+5511988887777
    Then the conversation is started
    And its members are ana and the WhatsApp contact +5511988887777

  Scenario: A WhatsApp number that belongs to a Chat4All user reaches that user
    Given bruno has connected his WhatsApp number +5511999998888
    When ana starts a private conversation with whatsapp:+5511999998888
    Then its members are ana and bruno

  Scenario: Ana starts a group with Bruno and Carla
    When ana starts a group with bruno, carla
    Then the conversation is started
    And its members are ana, bruno and carla

  Scenario: Inviting someone twice counts them once
    When ana starts a group with bruno, carla, bruno
    Then its members are ana, bruno and carla

  Scenario: A private conversation is with exactly one other person
    When ana starts a private conversation with bruno, carla
    Then the conversation is refused because "a private conversation has exactly 2 members"

  Scenario: Nobody starts a private conversation with themselves
    When ana starts a private conversation with ana
    Then the conversation is refused because "a private conversation has exactly 2 members"

  Scenario: A group needs at least two other people
    When ana starts a group with bruno
    Then the conversation is refused because "a group has 3 to 100 members"

  Scenario: A group cannot be larger than the limit
    Given groups are limited to 3 members
    When ana starts a group with bruno, carla, dora
    Then the conversation is refused because "a group has 3 to 3 members"

  Scenario: Someone without an account cannot be invited by username
    When ana starts a private conversation with zeca
    Then the conversation is refused because "unknown member 'zeca'"
