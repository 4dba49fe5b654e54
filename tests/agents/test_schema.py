import pytest

from agents.schema import (
    CommandError,
    ContradictoryCommandError,
    ParsedCommand,
    Preference,
    Retraction,
)
from guardrails.errors import InvalidInputError


def P(**kw):
    base = dict(polarity="-", kind="hard", attribute="genre", operator="eq", value="Horror")
    base.update(kw)
    return Preference(**base)


def test_valid_preference_and_slot():
    p = P()
    assert p.slot() == ("genre", "eq", "horror", "-", "hard")
    assert p.key == ("genre", "horror")


@pytest.mark.parametrize("bad", [
    dict(operator="ge"),  # ge makes no sense for a genre
    dict(attribute="year", operator="ge", value=3020, polarity="+"),  # absurd year
    dict(attribute="year", operator="ge", value="1990", polarity="+"),  # year must be int
    dict(attribute="year", operator="ge", value=1990, polarity="-"),  # years are stored positively
    dict(attribute="text", operator="like", value="dark"),  # free text cannot be hard
    dict(attribute="title", operator="like", value="Heat"),  # similarity is soft only
    dict(value="   "),
    dict(attribute="actor", value="Tom Hanks"),  # unknown attribute
    dict(weight=5.0),
])
def test_invalid_preferences_rejected(bad):
    with pytest.raises(ValueError):
        P(**bad)


def test_extra_fields_forbidden():
    with pytest.raises(ValueError):
        Preference(polarity="+", kind="soft", attribute="genre", value="Drama", user_id="42")


def test_retraction_needs_target():
    with pytest.raises(ValueError):
        Retraction()
    r = Retraction(attribute="year")
    assert r.matches(P(attribute="year", operator="ge", value=1990, polarity="+"))
    assert not r.matches(P())


def test_contradictory_command():
    cmd = ParsedCommand(preferences=[P(polarity="+"), P(polarity="-")])
    with pytest.raises(ContradictoryCommandError):
        cmd.check_consistent()
    years = ParsedCommand(preferences=[P(attribute="year", operator="ge", value=2000, polarity="+"),
                                       P(attribute="year", operator="le", value=1990, polarity="+")])
    with pytest.raises(ContradictoryCommandError):
        years.check_consistent()


def test_error_hierarchy_is_typed():
    assert issubclass(ContradictoryCommandError, CommandError)
    assert issubclass(CommandError, InvalidInputError)
