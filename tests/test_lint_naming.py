"""Event names: the guide's good and bad examples, suggestions, and the verb tables behind them."""

from __future__ import annotations

import pytest

from tidings.lint.naming import check_event_name, is_past, past_participle, words_of


@pytest.mark.parametrize("name", ["user.created", "order.placed", "payment.processed", "inventory.updated"])
def test_the_guides_good_names_pass(name: str) -> None:
    assert check_event_name(name) is None
    assert check_event_name(name, identifier=True) is None


@pytest.mark.parametrize(
    ("name", "kind", "suggestion"),
    [
        ("create_user", "imperative", "user.created"),
        ("update_order", "imperative", "order.updated"),
        ("do_something", "imperative", "something.done"),
        ("user_event", "vague", "user.created"),
    ],
)
def test_the_guides_bad_names_are_flagged_with_a_suggestion(name: str, kind: str, suggestion: str) -> None:
    finding = check_event_name(name)
    assert finding is not None
    assert (finding.kind, finding.suggestion) == (kind, suggestion)
    assert name in finding.message


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("user.create", "user.created"),
        ("order.ship", "order.shipped"),
        ("create.user", "user.created"),
        ("shop.create_order", "shop.order.created"),
        ("send_email", "email.sent"),
        ("build_image", "image.built"),
        ("pay_invoice", "invoice.paid"),
        ("channel_archive", "channel.archived"),
        (
            "smartylighting.streetlights.1.0.event.{id}.lighting.dim",
            "smartylighting.streetlights.1.0.event.{id}.lighting.dimmed",
        ),
    ],
)
def test_commands_and_present_tense_become_past_tense_facts(name: str, suggestion: str) -> None:
    finding = check_event_name(name)
    assert finding is not None
    assert finding.suggestion == suggestion


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("user_created", "user.created"), ("UserCreated", "user.created"), ("User.Created", "user.created")],
)
def test_event_types_must_be_dotted_lower_case(name: str, suggestion: str) -> None:
    finding = check_event_name(name)
    assert finding is not None
    assert (finding.kind, finding.suggestion) == ("style", suggestion)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("createUser", "userCreated"), ("CreateUser", "UserCreated"), ("updateCommentLikes", "commentLikesUpdated")],
)
def test_identifiers_keep_their_case_style_in_the_suggestion(name: str, suggestion: str) -> None:
    finding = check_event_name(name, identifier=True)
    assert finding is not None
    assert finding.suggestion == suggestion


@pytest.mark.parametrize("name", ["UserCreated", "lightMeasured", "user_created", "fileShared"])
def test_identifiers_are_judged_on_tense_only(name: str) -> None:
    assert check_event_name(name, identifier=True) is None


@pytest.mark.parametrize(
    "name",
    [
        "heartbeat",
        "ping",
        "rpc_queue",
        "order_items",
        "AUTHORIZATION_REVOCATION",
        "user.created.v2",
        "{queue}",
        "tv_show",
    ],
)
def test_names_we_cannot_read_are_left_alone(name: str) -> None:
    assert check_event_name(name) is None


@pytest.mark.parametrize(
    ("verb", "past"),
    [
        ("create", "created"),
        ("send", "sent"),
        ("build", "built"),
        ("pay", "paid"),
        ("do", "done"),
        ("write", "written"),
        ("resend", "resent"),
        ("ship", "shipped"),
        ("stop", "stopped"),
        ("submit", "submitted"),
        ("modify", "modified"),
        ("play", "played"),
        ("open", "opened"),
        ("cancel", "canceled"),
        ("process", "processed"),
        ("fix", "fixed"),
        ("agree", "agreed"),
    ],
)
def test_past_participle(verb: str, past: str) -> None:
    assert past_participle(verb) == past
    assert is_past(past)


def test_words_of_splits_every_case_style() -> None:
    assert words_of("createUser") == ["create", "user"]
    assert words_of("create_user") == ["create", "user"]
    assert words_of("create-user") == ["create", "user"]
    assert words_of("HTTPRequestSent") == ["http", "request", "sent"]
    assert not is_past("speed")
