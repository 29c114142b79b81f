"""The one-shot Omniglot demo (`twinsearch demo`): plan, run and figures (the server
subprocess is `twinsearch.client.server_process`)."""
