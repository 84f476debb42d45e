"""`/dashboard`: a live page per tenant, server-rendered (Jinja2) and kept current by htmx over
server-sent events, one shared snapshot per tenant per second."""
