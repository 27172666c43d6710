Feature: Other systems hear about conversations through webhooks
  A team's CRM wants to know about every message in its conversations and whether the
  messages it sent were read. Chat4All calls the CRM's URL, signs every call so the CRM
  can tell it is genuine, keeps trying for hours while the CRM is down, and never lets a
  webhook reach Chat4All's own network.

  Background:
    Given these people use Chat4All: ana, bruno
    And ana has a private conversation with bruno
    And ana's CRM listens at "https://crm.example.com/chat4all" for new messages and statuses

  Scenario: The CRM hears of a new message once, signed with ana's secret
    Given bruno has sent "Olá!"
    When Chat4All calls the webhooks that are due
    Then the CRM received "Olá!" once
    And the call is signed with ana's secret

  Scenario: A CRM that is down gets the same call again later
    Given the CRM answers 503 twice
    And bruno has sent "Olá!"
    When Chat4All calls the webhooks that are due
    And 10 minutes pass
    And Chat4All calls the webhooks that are due
    And 10 minutes pass
    And Chat4All calls the webhooks that are due
    Then the CRM received "Olá!" 3 times, always as the same delivery

  Scenario: A call that never succeeds becomes a dead letter that ana can replay
    Given the CRM is down
    And bruno has sent "Olá!"
    When Chat4All keeps calling for a day
    Then ana sees one failed delivery of "Olá!"
    When the CRM is back and ana replays it
    And Chat4All calls the webhooks that are due
    Then the CRM received "Olá!" as the same delivery

  Scenario: A webhook may not point at the cloud's metadata service
    When ana subscribes "http://169.254.169.254/latest/meta-data/" to new messages
    Then she is told this URL may not receive webhooks
