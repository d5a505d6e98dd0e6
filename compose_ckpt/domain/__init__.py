"""The domain: what snapshot, restore, migrate and the rest do, over the engine adapter and the store.

Names: a `Project` (project.py) is a compose project bound to an engine; `ComposeProject` (compose/)
is the parsed compose model it wraps; a compose project's name, as a `str`, is `project_name`.
(`Manifest.project` and the `--json` keys keep `project`: they are the documented formats.)

Entry points take, in this order: the stack (a `Project`, or an engine and a `project_name`), the
store, any other place involved (a target engine, a registry client), the request; progress
callbacks and timings are keyword-only.
"""
