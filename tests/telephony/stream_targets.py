"""A StreamTarget for the carriers' answer documents, with values that need escaping."""

from outdial.telephony.base import StreamTarget

TRICKY_VARIABLES = {"name": 'Zoë "Z" <O\'Neil> & co', "balance": 12.5, "tags": ["a", "b"]}


def target(url: str = "wss://agent.example.com/stream?tenant=acme&v=2") -> StreamTarget:
    return StreamTarget(
        url=url,
        secret="whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0",
        call_id="call_1",
        participant_id="participant_1",
        attempt_id="att_1",
        agent_id="0193f0c2-0000-7000-8000-000000000001",
        to="+15559990001",
        from_number="+15559990000",
        campaign_id="cmp_1",
        variables=TRICKY_VARIABLES,
    )
