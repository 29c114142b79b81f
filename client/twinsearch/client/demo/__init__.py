"""The one-shot Omniglot demo (`twinsearch demo`): plan, server subprocess, run and figures."""
