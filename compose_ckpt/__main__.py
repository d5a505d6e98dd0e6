from compose_ckpt.cli.main import entry

entry()
