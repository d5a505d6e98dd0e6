"""The command line: Typer parsing and printing only; the work happens in compose_ckpt.domain."""
