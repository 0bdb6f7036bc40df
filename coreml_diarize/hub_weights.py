"""Weights from the Hugging Face hub: a family's files from one folder at one commit, through
huggingface_hub's cache (honouring HF_HUB_OFFLINE, HF_HUB_CACHE and HF_TOKEN)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from .errors import SourceError
from .specs import WeightFamily


def hub_files(
    repo: str, revision: str | None, family: WeightFamily, cache_dir: Path | None
) -> tuple[dict[str, Path], str | None]:
    """(path in the repo -> local cached file, commit) for the family's files: from the
    repo's `<family>/` folder if its first file is there, else from the repo root. Every file
    of a family comes from one folder and one commit (the first file's)."""
    first, *rest = family.files
    path, commit, rel = _hub_file(repo, revision, [f"{family.name}/{first}", first], cache_dir)
    pinned = commit or revision
    folder = rel[: -len(first)]
    paths = {rel: path}
    for name in rest:
        paths[folder + name] = _hub_file(repo, pinned, [folder + name], cache_dir)[0]
    return paths, commit


def _hub_file(
    repo: str, revision: str | None, filenames: Sequence[str], cache_dir: Path | None
) -> tuple[Path, str | None, str]:
    """The first of `filenames` the repo has, through huggingface_hub (honouring
    HF_HUB_OFFLINE, the cache and HF_TOKEN): (local path, commit, filename)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    token = os.environ.get("HF_TOKEN") or None
    where = repo + (f"@{revision}" if revision else "")
    wanted = filenames[0] + "".join(f" (or {name})" for name in filenames[1:])
    not_cached = False
    for filename in filenames:
        try:
            local = hf_hub_download(
                repo_id=repo,
                filename=filename,
                revision=revision,
                cache_dir=cache,
                token=token,
                local_files_only=offline,
            )
        except LocalEntryNotFoundError:  # not cached, hub unreachable: maybe the next is cached
            not_cached = True
            continue
        except GatedRepoError as exc:
            raise SourceError(
                f"hub repo {where} is gated: accept its terms on the hub and set HF_TOKEN"
            ) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise SourceError(f"hub repo {where} or its {wanted} was not found") from exc
        except EntryNotFoundError:  # the hub says the repo has no such file
            continue
        except Exception as exc:  # network errors, bad tokens...: never print the token itself
            raise SourceError(
                f"cannot fetch {where} from the hub: {exc.__class__.__name__}"
            ) from exc
        path = Path(local)
        match = re.search(r"snapshots/([0-9a-f]{40})/", path.as_posix())
        return path, (match.group(1) if match else revision), filename
    if not_cached:
        raise SourceError(
            f"hub repo {where} is not in the local cache with {wanted}, and the hub cannot be"
            " reached" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        )
    raise SourceError(f"hub repo {where} has no {wanted}")
