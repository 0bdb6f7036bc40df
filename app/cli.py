"""The `coreml-diarize` command: parses, calls library functions, prints. Nothing else.

User mistakes end in one line on stderr and a non-zero exit (`--debug` shows the traceback).
"""

from __future__ import annotations

import sys

import click

from coreml_diarize.errors import DiarizeError

from .commands import (
    build,
    compare,
    convert,
    diarize,
    evaluate,
    export,
    inspect,
    package,
    publish,
    quantize,
    sensitivity,
    validate,
    verify,
)


class DiarizeGroup(click.Group):
    """Turns library errors and usage errors into one clear line + exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        # bad option, missing argument...: one line, no usage dump
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DiarizeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=DiarizeGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="coreml-diarize")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Convert pyannote diarization models to Core ML and prove they match PyTorch."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if not debug:
        # coremltools' import-time warnings, silenced for this command only: the filters are
        # restored when the command's context closes (no process-wide state left behind)
        from coreml_diarize.mlpackage import quiet_warnings

        ctx.with_resource(quiet_warnings())


for command in (
    convert.convert,
    build.build,
    validate.validate,
    package.package,
    verify.verify,
    export.export,
    publish.publish,
    inspect.inspect,
    quantize.quantize,
    sensitivity.sensitivity,
    diarize.diarize,
    compare.compare,
    evaluate.evaluate,
):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
