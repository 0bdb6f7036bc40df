"""`publish`, part 2: the plan onto the Hub in one commit, next to the other profiles' files.

Which files a profile owns on the repo is what its manifest there lists
(`manifests/<profile>.json`, app/publish_card.py): publishing the offline set replaces only the
files the offline set published before and never touches the online set's, however the two
are named. The card and LICENSE.md are shared: regenerated over every profile on the repo.
A repo published by earlier versions of this toolkit has one `manifest.json` at the root: its
files belong to the profile it names.

Nothing is half-published: every file goes into ONE `HfApi.create_commit` (huggingface_hub
2.4.0 hf_api.py; `CommitOperationAdd` / `CommitOperationDelete` from _commit_api.py): files are
pre-uploaded to storage, but nothing shows on the repo until the commit lands, and a failed
commit leaves the repo as it was. The commit names the repo state it was planned against
(`parent_commit`: "the commit will fail if `revision` does not point to `parent_commit`"), so a
concurrent publish of the other profile cannot be overwritten unseen. The token comes from
`HF_TOKEN` and never appears in output or in error messages.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coreml_diarize.errors import DiarizeError

from .bundle_files import MANIFEST, MANIFESTS_DIR, manifest_paths
from .publish import SHARED, PublishPlan, check_case_collisions, check_repo_id, shared_files
from .publish_card import LICENSE_FILE, license_of, manifest_path_in_repo

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import HfApi

TOKEN_ENV = "HF_TOKEN"


class PublishError(DiarizeError):
    """Publishing to the Hub failed; nothing was published."""

    exit_code = 8


@dataclass
class RepoState:
    """The repo (at one commit) as a publish sees it."""

    parent_commit: str | None
    files: list[str]
    manifests: dict[str, dict] = field(default_factory=dict)  # profile -> its manifest
    legacy: dict | None = None  # a root manifest.json from before manifests/<profile>.json

    def owned_by(self, profile: str) -> set[str]:
        """The repo paths a profile published (its manifest lists them), manifest included."""
        owned: set[str] = set()
        if profile in self.manifests:
            owned |= manifest_paths(self.manifests[profile]) | {manifest_path_in_repo(profile)}
        if self.legacy is not None and (self.legacy.get("profile") or profile) == profile:
            owned |= manifest_paths(self.legacy) | {MANIFEST}
        return owned & set(self.files)

    def owned_by_others(self, profile: str) -> dict[str, str]:
        """path -> the other profile that owns it."""
        out: dict[str, str] = {}
        others = set(self.manifests) | {(self.legacy or {}).get("profile") or profile}
        for other in sorted(others - {profile}):
            out.update(dict.fromkeys(self.owned_by(other), other))
        return out


@dataclass
class PublishResult:
    repo_id: str
    commit_url: str | None
    commit_oid: str | None
    pr_url: str | None
    files: int
    deleted: list[str]
    total_bytes: int


def resolve_token(token: str | None = None) -> str:
    token = token or os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise PublishError(
            f"no Hub token: set {TOKEN_ENV} to a token with write access "
            "(or use --dry-run to see the plan without publishing)"
        )
    return token


def _scrub(text: str, token: str) -> str:
    text = " ".join(str(text).split())  # one line
    return text.replace(token, "***") if token else text


def _http_reason(exc: BaseException, token: str) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    server = getattr(exc, "server_message", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    reason = f"HTTP {status}: {server or first}" if status else first
    return _scrub(reason, token)[:300]


def publish(
    plan: PublishPlan,
    repo_id: str,
    *,
    api: HfApi | None = None,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    progress=None,
) -> PublishResult:
    """Create REPO if needed and upload PLAN as one commit beside the repo's other profiles;
    raise PublishError on any failure (DiarizeError when the plan conflicts with the repo)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    check_repo_id(repo_id)
    token = resolve_token(token)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    say = progress or (lambda line: None)
    state = _read_repo(api, repo_id, token=token, revision=revision, private=private)
    files, stale = _against_repo(plan, state, repo_id)
    operations: list[Any] = [
        CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.payload()) for f in files
    ]
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    total = sum(f.size for f in files)
    say(
        f"uploading {len(files)} files ({total / 1e6:.2f} MB) of the {plan.profile} set"
        + (f", deleting {len(stale)} it published before" if stale else "")
        + f" to {repo_id} in one commit"
    )
    info = _commit(
        api,
        plan,
        repo_id,
        operations,
        token=token,
        revision=revision,
        create_pr=create_pr,
        parent_commit=state.parent_commit,
    )
    return PublishResult(
        repo_id=repo_id,
        commit_url=getattr(info, "commit_url", None),
        commit_oid=getattr(info, "oid", None),
        pr_url=getattr(info, "pr_url", None),
        files=len(files),
        deleted=stale,
        total_bytes=total,
    )


def _against_repo(plan: PublishPlan, state: RepoState, repo_id: str):
    """The commit's files (the card over every profile) and the paths it deletes: what this
    profile published before and no longer has. Refuses a path another profile owns and two
    paths on the repo that differ only by case."""
    others = state.owned_by_others(plan.profile)
    taken = sorted(p for p in plan.owned_paths() if p in others)
    if taken:
        raise DiarizeError(
            f"{taken[0]} on {repo_id} belongs to the {others[taken[0]]} set: one file cannot "
            "belong to two sets; nothing was published"
        )
    stale = sorted(state.owned_by(plan.profile) - plan.paths - set(others) - set(SHARED))
    manifests = {p: m for p, m in state.manifests.items() if p != plan.profile}
    if state.legacy is not None and state.legacy.get("profile") not in (None, plan.profile):
        manifests.setdefault(state.legacy["profile"], state.legacy)
    manifests[plan.profile] = plan.manifest
    licenses = dict(plan.licenses)
    for profile, manifest in manifests.items():
        if profile != plan.profile:
            licenses.update({a["name"]: license_of(None, a) for a in manifest["artifacts"]})
    own = [f for f in plan.files if f.path_in_repo not in SHARED]
    files = sorted(
        own + shared_files(manifests, own, licenses, repo_id), key=lambda f: f.path_in_repo
    )
    if LICENSE_FILE in state.files and all(f.path_in_repo != LICENSE_FILE for f in files):
        stale.append(LICENSE_FILE)  # the licences agree now
    check_case_collisions((set(state.files) - set(stale)) | {f.path_in_repo for f in files})
    return files, stale


def _read_repo(api, repo_id: str, *, token, revision: str | None, private: bool) -> RepoState:
    """Create the repo (and branch) if needed; its commit, files and profiles' manifests."""
    try:
        # private=None, not False, without --private: an organisation whose default is private
        # keeps it (False would force a public repo); an existing repo's visibility is untouched
        api.create_repo(
            repo_id,
            repo_type="model",
            private=True if private else None,
            exist_ok=True,
            token=token,
        )
        if revision and revision != "main":
            api.create_branch(
                repo_id, branch=revision, repo_type="model", exist_ok=True, token=token
            )
        parent = getattr(
            api.repo_info(repo_id, repo_type="model", revision=revision, token=token), "sha", None
        )
        at = parent or revision
        files = list(api.list_repo_files(repo_id, repo_type="model", revision=at, token=token))
        state = RepoState(parent, files)
        wanted = [p for p in files if p.startswith(f"{MANIFESTS_DIR}/") and p.endswith(".json")]
        with tempfile.TemporaryDirectory(prefix="coreml-diarize-hub-") as tmp:

            def read(path: str) -> dict:
                local = api.hf_hub_download(
                    repo_id, path, repo_type="model", revision=at, token=token, local_dir=tmp
                )
                return json.loads(Path(os.fspath(local)).read_text())

            for path in wanted:
                state.manifests[Path(path).stem] = read(path)
            if MANIFEST in files:
                state.legacy = read(MANIFEST)
    except Exception as exc:
        raise PublishError(
            f"cannot create or read {repo_id} ({_http_reason(exc, token)}); "
            "check the token's write access to it; nothing was published"
        ) from exc
    return state


def _commit(
    api, plan: PublishPlan, repo_id: str, operations, *, token, revision, create_pr, parent_commit
):
    """One commit for the whole plan: it lands whole or not at all."""
    try:
        return api.create_commit(
            repo_id,
            operations,
            commit_message=plan.commit_message,
            commit_description=plan.commit_description,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            token=token,
            parent_commit=parent_commit,
        )
    except Exception as exc:
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, HfHubHTTPError):  # the Hub answered: no commit was made
            outcome = "the commit was refused, so nothing was published"
        else:  # the upload broke off; only a drop during the final call leaves any doubt
            outcome = (
                "no commit was made, so nothing was published (if the connection dropped "
                f"at the very end, check https://huggingface.co/{repo_id}/commits)"
            )
        raise PublishError(
            f"upload to {repo_id} failed ({_http_reason(exc, token)}): {outcome}; "
            "files already sent to storage are not part of the repo; run publish again"
        ) from exc
