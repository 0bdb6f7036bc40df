"""`coreml-diarize publish`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import ship_option


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", "repo_id", required=True, help="Hub model repo, OWNER/NAME.")
@click.option("--revision", default=None, help="Branch to commit to (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo private (if it does not exist).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing.")
@click.option("--dry-run", is_flag=True, help="Print the file plan and the card; no network.")
@click.option("--allow-untrained", is_flag=True, help="Publish seeded random (untrained) weights.")
@ship_option
def publish(
    bundle: Path,
    repo_id: str,
    revision: str | None,
    private: bool,
    create_pr: bool,
    dry_run: bool,
    allow_untrained: bool,
    ship,
) -> None:
    """Verify BUNDLE (directory or .zip) and upload it to the Hub in one commit (HF_TOKEN).

    One repo holds every profile (online, offline) side by side: a publish replaces only the
    files its own profile published before."""
    from ..publish import check_repo_id, plan_publish
    from ..publish_hub import publish as publish_plan
    from ..publish_hub import resolve_token

    check_repo_id(repo_id)
    if not dry_run:
        resolve_token()  # fail before hashing the bundle
    with plan_publish(bundle, repo_id=repo_id, allow_untrained=allow_untrained, ship=ship) as plan:
        if dry_run:
            click.echo(plan.describe())
            click.echo(f"\n--- README.md (model card) ---\n{plan.card}")
            click.echo("dry run: nothing was uploaded", err=True)
            return
        result = publish_plan(
            plan,
            repo_id,
            revision=revision,
            private=private,
            create_pr=create_pr,
            progress=lambda line: click.echo(line, err=True),
        )
    click.echo(
        f"published {result.files} files ({result.total_bytes / 1e6:.2f} MB) to {repo_id}"
        + (f", removed {len(result.deleted)} stale" if result.deleted else "")
    )
    click.echo(result.pr_url or result.commit_url or f"https://huggingface.co/{repo_id}")
