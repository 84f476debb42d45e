"""The operator's commands that talk to the HTTP API (`outdial campaign …`, `outdial calls …`,
`outdial queue …`, `outdial dnc …`), mounted by cli.py."""
