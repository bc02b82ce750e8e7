import pytest

from common.topics import InvalidTopicError, TopicKind, Topics


def test_default_tree():
    topics = Topics()
    assert topics.telemetry("DC-CNX-01") == "brm/v1/DC-CNX-01/telemetry"
    assert topics.birth("DC-CNX-01") == "brm/v1/DC-CNX-01/birth"
    assert topics.state("DC-CNX-01") == "brm/v1/DC-CNX-01/state"
    assert topics.events("DC-CNX-01") == "brm/v1/DC-CNX-01/events"
    assert topics.shared("central", TopicKind.TELEMETRY) == "$share/central/brm/v1/+/telemetry"


def test_parse_round_trip_with_custom_prefix():
    topics = Topics("acme/brm/v1")
    assert topics.parse(topics.state("DC-HDY-01")) == ("DC-HDY-01", TopicKind.STATE)


@pytest.mark.parametrize(
    "topic",
    [
        "brm/v2/DC-CNX-01/telemetry",
        "brm/v1/DC-CNX-01/unknown",
        "brm/v1/not-a-site/telemetry",
        "x/brm/v1/DC-CNX-01/telemetry",
        "brm/v1/DC-CNX-01/telemetry/extra",
    ],
)
def test_parse_rejects_foreign_topics(topic):
    with pytest.raises(InvalidTopicError):
        Topics().parse(topic)


@pytest.mark.parametrize("prefix", ["", "a//b", "brm/+", "brm/#", "$SYS/x"])
def test_rejects_bad_prefix(prefix):
    with pytest.raises(InvalidTopicError):
        Topics(prefix)


def test_site_must_be_valid():
    with pytest.raises(ValueError, match="invalid location ID"):
        Topics().telemetry("DC-CNX-01/#")
