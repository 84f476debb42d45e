"""The media path: an answered call's audio carried between the callee and its agent.

`agent` speaks the agent's WebSocket (the Twilio Media Streams protocol), shared by every
provider that carries media itself (`sip`, `simulated`); `bridge`, `rtp`, `sdp` and `g711` are
the `sip` provider's RTP relay; `clock` paces every call's outgoing audio from one timer."""
