"""The released model: the best cross-validated models and the settings that feed them, as one
versioned, checksummed folder that `predict` loads from disk or object storage.

Layout: manifest.json (version, selection and its cross-validated scores, detection's operating point,
the model card, the preprocessing and segmentation settings, sha256 of every file), MODEL_CARD.md
(the card for a person: intended use, data, cross-validated performance, limits) and one bundle per role: segmenter/ (white cells),
detection/ and fab/ (stage-3 or classical models for multi-cell images), cells/ (the stage-2
model that scores each isolated cell). The version is derived from the models' content (not
their save dates), so publishing the same models again is a no-op.

What is released is chosen on the folds' inner validation splits only (see `select`); its
cross-validated scores are then an estimate of the released configuration that nothing was tuned
on. A release must beat every baseline scored (the majority class, the colour histogram, ImageNet features
where the run had them) on those scores, with an operating point that does not call every smear ALL
(`gate`): where it does not, `evaluate.release_gate` decides: "refuse" writes a manifest that
says why and holds no model (predict refuses it), "flag" releases and marks it as failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from leukemia_mtl import __version__
from leukemia_mtl.bundles import (
    META_FILE,
    MODEL_FILE,
    SEGMENTER_META_FILE,
    SEGMENTER_MODEL_FILE,
    SUMMARY_FILE,
    describe_classifier,
)
from leukemia_mtl.config import GATE_ACTIONS, INNER_METRICS, Profile, get_profile
from leukemia_mtl.errors import LeukemiaMtlError, StorageError
from leukemia_mtl.formatting import number
from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text, sha256_file
from leukemia_mtl.model_card import build_model_card, card_markdown
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.stages import CELL_SCORER, CELL_SCORER_ARM, KIND_OF_ARM, MTL, SCORED_TASKS, by_key

MANIFEST = "manifest.json"
MODEL_CARD = "MODEL_CARD.md"
FORMAT = 1
BUNDLE_FILES = (SEGMENTER_MODEL_FILE, SEGMENTER_META_FILE, MODEL_FILE, META_FILE)


class ReleaseError(LeukemiaMtlError):
    """A release that cannot be built, published or trusted."""


def select(crossval: CrossvalResult, metric: str) -> dict:
    """Per task: the (backbone, arm) with the highest mean `metric` on the folds' inner validation
    splits, then its fold model with the highest inner-validation value. Ties (and runs too small
    for an inner split) go to multistage, then to the first name, then to the first fold. The
    evaluation folds' scores are only reported (cv_mean, cv_std): they choose nothing."""
    if metric not in INNER_METRICS:
        raise ReleaseError(f"unknown selection metric {metric!r}; one of {', '.join(INNER_METRICS)}")

    def inner(value) -> float:
        return -1.0 if value is None else value

    chosen = {}
    for task in crossval.task_names:
        result = min(crossval.arms(task), key=lambda r: (-inner(r.inner_mean(metric)), r.arm != MTL, r.backbone, r.arm))
        fold = max(
            result.folds, key=lambda f: (inner((f["inner_validation"] or {}).get(metric)), -f["repeat"], -f["fold"])
        )
        validated = fold["inner_validation"] is not None
        chosen[task] = {
            "backbone": result.backbone,
            "arm": result.arm,
            "fold_id": fold["fold_id"],
            "metric": metric,
            "chosen_by": "inner validation" if validated else "fold order (no inner validation split)",
            "inner_mean": result.inner_mean(metric),
            "fold_inner_value": (fold["inner_validation"] or {}).get(metric),
            "cv_mean": result.cv_mean(metric),
            "cv_std": result.cv_std(metric),
            "classes": result.classes,
        }
    return chosen


def gate(crossval: CrossvalResult, selection: dict, metric: str) -> dict:
    """Does each released configuration beat every baseline scored (majority class, colour, ImageNet features
    where scored) on its cross-validated `metric`, with predictions and an operating point that are not degenerate?"""
    reasons = []
    checked = {}
    for task, pick in selection.items():
        if task not in crossval.task_names:
            continue
        result = crossval.arm(task, pick["backbone"], pick["arm"])
        value = pick["cv_mean"]
        checked[task] = {"released": value}
        for flag in result.degenerate:
            reasons.append(f"{task}: the released {pick['backbone']} {pick['arm']} model {flag}")
        if result.degenerate_operating_point:
            reasons.append(
                f"{task}: the released {pick['backbone']} {pick['arm']} model's operating point is degenerate: "
                f"{result.degenerate_operating_point}"
            )
        for baseline in crossval.baseline_arms(task):
            other = baseline.cv_mean(metric)
            checked[task][baseline.arm] = other
            if value is None or other is None or value <= other:  # undefined is no evidence of beating it
                reasons.append(
                    f"{task}: the released {pick['backbone']} {pick['arm']} model's cross-validated {metric} "
                    f"{number(value, 4)} does not beat the {baseline.arm} baseline's {number(other, 4)}"
                )
        if not crossval.baseline_arms(task):
            reasons.append(f"{task}: no baseline was scored, so nothing shows the model beats a trivial one")
    return {"passed": not reasons, "metric": metric, "values": checked, "reasons": reasons}


def _find(model_dirs: list[Path], stage: str, task: str, backbone: str, fold_id: str) -> Path:
    for directory in model_dirs:
        info = describe_classifier(directory)
        summary = json.loads((directory / SUMMARY_FILE).read_text())
        if (info.stage, info.task, info.backbone, summary["fold_id"]) == (stage, task, backbone, fold_id):
            return directory
    raise ReleaseError(f"no {stage} {task} model of {backbone} for fold {fold_id} among the {len(model_dirs)} given")


def build_release(
    crossval: CrossvalResult,
    model_dirs: list[Path | str],
    segmenter_dir: Path | str,
    out_dir: Path | str,
    profile: Profile,
    data_summary: dict | None = None,
) -> dict:
    """Copy the selected bundles into out_dir and write the manifest and the model card (MODEL_CARD.md,
    from `data_summary`, ingest's summary, and the cross-validation); returns the manifest."""
    model_dirs = [Path(d) for d in model_dirs]
    out_dir = Path(out_dir)
    if profile.evaluate.release_gate not in GATE_ACTIONS:
        raise ReleaseError(
            f"evaluate.release_gate must be one of {', '.join(GATE_ACTIONS)}, got {profile.evaluate.release_gate!r}"
        )
    selection = select(crossval, profile.evaluate.release_metric)
    verdict = {**gate(crossval, selection, profile.evaluate.release_metric), "action": profile.evaluate.release_gate}
    sources = {"segmenter": Path(segmenter_dir)}
    for task in SCORED_TASKS:
        if task not in selection:
            raise ReleaseError(f"cross-validation has no {task} results to release")
        pick = selection[task]
        sources[task] = _find(model_dirs, KIND_OF_ARM[pick["arm"]], task, pick["backbone"], pick["fold_id"])
    # the cell scorer: the stage-2 model trained with the released FAB model's backbone and fold
    fab, scorer = selection["fab"], by_key(CELL_SCORER)
    sources["cells"] = _find(model_dirs, scorer.kind, scorer.task, fab["backbone"], fab["fold_id"])
    selection["cells"] = {
        "backbone": fab["backbone"],
        "arm": CELL_SCORER_ARM,
        "fold_id": fab["fold_id"],
        "stage": scorer.kind,
    }

    imagenet = all(describe_classifier(sources[role]).imagenet for role in SCORED_TASKS)
    starting_weights = {
        role: describe_classifier(sources[role]).weights_source
        or {"imagenet": describe_classifier(sources[role]).imagenet, "source": "not recorded"}
        for role in (*SCORED_TASKS, "cells")
    }
    detection_point = crossval.arm(
        "detection", selection["detection"]["backbone"], selection["detection"]["arm"]
    ).operating_point
    operating = {k: detection_point.get(k) for k in ("threshold", "target_sensitivity", "threshold_chosen_on")}

    def card(version: str | None) -> dict:
        return build_model_card(
            version=version,
            profile=profile,
            crossval=crossval,
            selection=selection,
            gate=verdict,
            data_summary=data_summary,
            imagenet=imagenet,
            starting_weights=starting_weights,
        )

    if out_dir.exists():
        shutil.rmtree(out_dir)
    if not verdict["passed"] and verdict["action"] == "refuse":  # a manifest that says why, and no model
        manifest = {
            "format": FORMAT,
            "name": "leukemia-mtl",
            "version": None,
            "refused": True,
            "profile": profile.name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": __version__,
            "selection": selection,
            "gate": verdict,
            "operating_point": operating,
            "model_card": card(None),
            "files": {},
        }
        atomic_write_json(out_dir / MANIFEST, manifest)
        return manifest
    files = {}
    for role, source in sources.items():
        for path in sorted(source.iterdir()):
            if path.name in BUNDLE_FILES:
                target = out_dir / role / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                files[f"{role}/{path.name}"] = sha256_file(target)
    contents = {relative: _content_digest(out_dir / relative) for relative in files}
    # the threshold and the card are part of what predict answers with: another operating point is another release
    contents["operating_point"] = json.dumps(operating, sort_keys=True)
    contents["model_card"] = json.dumps(card(None), sort_keys=True)
    content = hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()[:12]
    model_card = card(f"{profile.name}-{content}")
    atomic_write_text(out_dir / MODEL_CARD, card_markdown(model_card))  # after the version: it names it
    files[MODEL_CARD] = sha256_file(out_dir / MODEL_CARD)
    manifest = {
        "format": FORMAT,
        "name": "leukemia-mtl",
        "version": f"{profile.name}-{content}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
        "profile": profile.name,
        "selection": selection,
        "gate": verdict,
        "operating_point": operating,
        "starting_weights": starting_weights,  # per released model: where its backbone's weights came from
        "model_card": model_card,
        "settings": {
            "data": asdict(profile.data),
            "preprocess": asdict(profile.preprocess),
            "segment": asdict(profile.segment),
            "input_size": profile.model.input_size,
            "stage3_images": profile.train.stage3_images,
            "explain_min_side": profile.evaluate.explain_min_side,
        },
        "files": files,
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def run_release_task(crossval, data_summary, segmenter, candidates: list, model, manifest, profile: Profile) -> dict:
    """The release component's one call: select, gate, bundle, publish to evaluate.models_uri (unless
    refused), and write the manifest beside the bundle with what the KFP UI shows."""
    result = build_release(
        CrossvalResult.load(crossval.path),
        [m.path for m in candidates],
        segmenter.path,
        model.path,
        profile,
        json.loads(Path(data_summary.path).read_text()),
    )
    uri = profile.evaluate.models_uri
    result["published_to"] = publish(model.path, uri, profile) if uri and not result.get("refused") else None
    atomic_write_json(Path(manifest.path), result)
    model.metadata.update(
        {
            "version": result["version"] or "refused",
            "published_to": result["published_to"] or "",
            "gate_passed": result["gate"]["passed"],
            **{f"{task}_backbone": pick["backbone"] for task, pick in result["selection"].items()},
        }
    )
    return result


def _content_digest(path: Path) -> str:
    """sha256 of what a file holds for prediction. A .keras archive also records when it was saved
    (metadata.json) and Python object ids (config.json's shared_object_id), so the same model saved
    by two runs differs in bytes: its members are hashed without the date and with the ids numbered
    in order of appearance, and a rerun with the same seed releases the same version
    (tests/test_reliability.py)."""
    if path.suffix != ".keras":
        return sha256_file(path)
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if name == "metadata.json":
                continue
            member = hashlib.sha256()
            with archive.open(name) as handle:
                if name == "config.json":
                    member.update(_canonical_config(json.load(handle)))
                else:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        member.update(block)
            digest.update(f"{name}\0{member.hexdigest()}\n".encode())
    return digest.hexdigest()


def _canonical_config(config) -> bytes:
    ids: dict[int, int] = {}

    def renumber(node):
        if isinstance(node, dict):
            return {
                k: (ids.setdefault(v, len(ids)) if k == "shared_object_id" else renumber(v))
                for k, v in sorted(node.items())
            }
        if isinstance(node, list):
            return [renumber(v) for v in node]
        return node

    return json.dumps(renumber(config), sort_keys=True).encode()


def verify(release_dir: Path | str) -> dict:
    """The manifest, after checking every listed file's sha256 (one error naming the bad file)."""
    release_dir = Path(release_dir)
    manifest_path = release_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{manifest_path}: not a release manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict):
        raise ReleaseError(f"{manifest_path}: not a release manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT:
        raise ReleaseError(
            f"{manifest_path}: release format {manifest.get('format')!r} ({type(manifest.get('format')).__name__}), "
            f"this code reads format {FORMAT!r} (an integer): a release from another version of "
            "leukemia-mtl, or an edited manifest"
        )
    if manifest.get("refused"):
        raise ReleaseError(
            f"{manifest_path}: no model was released: the gate refused it "
            f"({'; '.join(manifest.get('gate', {}).get('reasons', [])) or 'no reason recorded'})"
        )
    files = manifest.get("files")
    if (
        not isinstance(files, dict)
        or not files
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise ReleaseError(
            f"{manifest_path}: 'files' must list every file of the release with its sha256, got "
            f"{json.dumps(files)[:80]}; refused (nothing would be verified)"
        )
    if not isinstance(manifest.get("settings"), dict):
        raise ReleaseError(f"{manifest_path}: has no 'settings' object; not a release this code wrote")
    from leukemia_mtl.data.storage import safe_local_path

    unlisted = sorted(
        p.relative_to(release_dir).as_posix()
        for p in release_dir.rglob("*")
        if p.is_file()
        and p.name != MANIFEST
        and not p.name.startswith(".")  # .DS_Store, a download's .part
        and p.relative_to(release_dir).as_posix() not in files
    )
    if unlisted:  # the predictor loads what lies in the folder: each file must be covered by a checksum
        raise ReleaseError(f"{release_dir / unlisted[0]}: not listed in {MANIFEST}, so it cannot be verified; refused")
    for relative, expected in files.items():
        try:  # a hostile manifest must not make publish() copy, or predict load, files outside the release
            path = safe_local_path(release_dir, relative)
        except StorageError:
            raise ReleaseError(
                f"{manifest_path}: lists {relative!r}, which lies outside the release folder; refused"
            ) from None
        if not path.is_file():
            raise ReleaseError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != expected:
            raise ReleaseError(f"{path}: checksum differs from {MANIFEST} (corrupt or changed)")
    return manifest


def publish(release_dir: Path | str, uri: str, profile: Profile) -> str:
    """Copy the release to `uri`/<version>/ (s3:// or a folder); the manifest goes last, so a
    reader that finds it finds every file. Returns where it went."""
    from leukemia_mtl.data.storage import ObjectStore, is_s3_uri, parse_s3_uri

    release_dir = Path(release_dir)
    manifest = verify(release_dir)
    version = manifest["version"]
    ordered = sorted(manifest["files"]) + [MANIFEST]
    if is_s3_uri(uri):
        bucket, prefix = parse_s3_uri(uri)
        base = "/".join(filter(None, [prefix.strip("/"), version]))
        store = ObjectStore.from_env(profile.storage)
        store.ensure_bucket(bucket)
        for relative in ordered:
            store.upload_file(release_dir / relative, bucket, f"{base}/{relative}")
        return f"s3://{bucket}/{base}"
    target = Path(uri) / version
    if target.is_dir():
        verify(target)  # already published: same content, nothing to do
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
    try:
        for relative in ordered:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(release_dir / relative, staging / relative)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return str(target)


def fetch(location: str, cache_dir: Path | str | None = None, profile: Profile | None = None) -> Path:
    """A verified local copy of a release: a folder as is, or s3://bucket/prefix/<version> mirrored
    into `cache_dir` (default ~/.cache/leukemia-mtl/releases)."""
    from leukemia_mtl.data.storage import ObjectStore, is_s3_uri, parse_s3_uri

    if not is_s3_uri(location):
        path = Path(location)
        if not path.is_dir():
            raise ReleaseError(f"{location}: no such release folder")
        verify(path)
        return path
    bucket, prefix = parse_s3_uri(location)
    cache = Path(cache_dir or Path.home() / ".cache" / "leukemia-mtl" / "releases")
    target = cache / bucket / prefix.strip("/")
    store = ObjectStore.from_env((profile or get_profile("demo")).storage)
    store.download_prefix(location, target)
    verify(target)
    return target
