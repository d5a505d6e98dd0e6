"""The command line: Typer parsing and printing only; the work happens in compose_ckpt.domain.

`main` wires the app and is its one error edge; the commands live by family: `stack` (snapshot, restore,
recover, ps, config, adopt, unadopt), `store` (ls, inspect, rm, prune), `transport` (export, import, push,
pull, migrate), `host` (doctor and the `host` reboot hook). `options` holds the option types they share,
`context` what the global options lead to, `documents` the `--json` shapes, `progress` the progress display,
`plugin` the entry point that makes compose-ckpt a Docker CLI plugin (`docker ckpt`).
"""
