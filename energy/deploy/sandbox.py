"""The shell script that starts one container's process under its pod's constraints (pure).

It runs as root inside a private mount namespace (``unshare --mount --propagation private``), so
nothing it mounts is seen outside, and it does what the container runtime does:

1. the image's directories (WORKDIR, ``mkdir -p`` of the Dockerfile) on a tmpfs "image layer",
   owned by the image's user as its ``chown`` says;
2. every declared volume bind-mounted writable from a fresh host folder (emptyDir) -- before
   the root turns read-only, since a bind mount takes the read-only flag of its source;
3. ``readOnlyRootFilesystem``: every mount of the machine (and the image layer) remounted
   read-only -- in this namespace only; the volumes' own mounts stay writable;
4. ``setpriv``: the pod's uid/gid, fsGroup as supplementary group, ``no_new_privs`` for
   ``allowPrivilegeEscalation: false``, dropped capabilities out of the bounding set; then the
   working directory and ``exec`` of the container's command.

The network namespace is the machine's: the processes reach the local stack on 127.0.0.1.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from energy.deploy.manifest import ContainerSpec, ImageSpec, Mount, RehearsalError


@dataclass(frozen=True)
class Tools:
    mount: str = "mount"
    setpriv: str = "setpriv"
    sh: str = "/bin/sh"


def _top_dirs(dirs: Sequence[str]) -> list[str]:
    norm = sorted({d.rstrip("/") or "/" for d in dirs})
    return [d for d in norm if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in norm)]


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _bind_order(spec: ContainerSpec, volume_dirs: Mapping[str, str]) -> list[Mount]:
    """Parents before children, and a mount whose destination would hide another volume's host
    folder (a run folder under /tmp, say) after that volume."""
    pending = sorted(spec.mounts, key=lambda mt: mt.path.rstrip("/").count("/"))
    ordered: list[Mount] = []
    while pending:
        for mt in pending:
            hides = [o for o in pending if o is not mt and _under(volume_dirs[o.path], [mt.path])]
            parent_waits = [o for o in pending if o is not mt and _under(mt.path, [o.path])]
            if not hides and not parent_waits:
                ordered.append(mt)
                pending.remove(mt)
                break
        else:
            raise RehearsalError(
                f"{spec.label}: volume mounts {[m.path for m in pending]} would hide each other's host folders"
            )
    return ordered


def image_roots(image: ImageSpec) -> list[str]:
    """The topmost directories of the image layer (each gets a tmpfs)."""
    return [d for d in _top_dirs(image.dirs) if d != "/"]


def _capability_args(spec: ContainerSpec) -> list[str]:
    drop = [c.lower() for c in spec.drop_capabilities]
    add = [c.lower() for c in spec.add_capabilities]
    args = []
    if "all" in drop:
        args += ["--inh-caps=-all", "--bounding-set=-all" + "".join(f",+cap_{c}" for c in add)]
    elif drop:
        args += ["--bounding-set=" + ",".join(f"-cap_{c}" for c in drop)]
    if add:
        args += [
            "--inh-caps=" + ",".join(f"+cap_{c}" for c in add),
            "--ambient-caps=" + ",".join(f"+cap_{c}" for c in add),
        ]
    return args


def script(
    spec: ContainerSpec,
    image: ImageSpec,
    volume_dirs: Mapping[str, str],
    machine_mounts: Sequence[str],
    tools: Tools = Tools(),
) -> str:
    """``volume_dirs``: mount path -> host folder; ``machine_mounts``: the machine's mount points
    (from /proc/self/mountinfo) remounted read-only for a read-only root."""
    if spec.run_as_non_root and not spec.run_as_user:
        raise RehearsalError(f"{spec.label}: runAsNonRoot is set but no non-zero runAsUser (the kubelet refuses it)")
    missing = [m.path for m in spec.mounts if m.path not in volume_dirs]
    if missing:
        raise RehearsalError(f"{spec.label}: no host folder for volume mounts {missing}")
    q = shlex.quote
    m = q(tools.mount)
    roots = image_roots(image)
    owner = f"{spec.run_as_user or 0}:{spec.run_as_group or spec.run_as_user or 0}"
    image_owner = image.user if image.user and image.user.split(":")[0].isdigit() else "0"
    lines = ["set -eu"]
    for root in roots:
        lines.append(f"{m} -t tmpfs -o mode=0755,size=16m image-layer {q(root)}")
    made = [d for d in image.dirs if _under(d, roots)]
    made += [mt.path for mt in spec.mounts if _under(mt.path, roots)]
    if spec.workdir != "/" and _under(spec.workdir, roots):
        made.append(spec.workdir)
    if made:
        lines.append("mkdir -p " + " ".join(q(d) for d in sorted(set(made))))
        lines.append(f"chown {q(image_owner)} " + " ".join(q(d) for d in sorted(set(made) | set(roots))))
    for mt in _bind_order(spec, volume_dirs):
        opts = "bind,ro" if mt.read_only else "bind"
        lines.append(f"{m} --bind {q(volume_dirs[mt.path])} {q(mt.path)}")
        if opts != "bind":
            lines.append(f"{m} -o remount,{opts} {q(mt.path)}")
    if spec.read_only_root:
        for point in machine_mounts:
            if point in ("/proc", "/sys", "/dev") or point.startswith(("/proc/", "/sys/", "/dev/")):
                continue  # the runtime's own mounts; a container has /dev/shm writable too
            lines.append(f"{m} -o remount,bind,ro {q(point)}")
        for root in roots:
            lines.append(f"{m} -o remount,ro {q(root)}")
    lines.append(f"cd {q(spec.workdir)}")
    priv = [tools.setpriv]
    if spec.run_as_user is not None:
        priv += [f"--reuid={spec.run_as_user}", f"--regid={owner.split(':')[1]}"]
        priv += [f"--groups={spec.fs_group}"] if spec.fs_group is not None else ["--clear-groups"]
    if spec.no_new_privileges:
        priv.append("--no-new-privs")
    priv += _capability_args(spec)
    lines.append("exec " + " ".join(q(a) for a in [*priv, "--", *spec.argv]))
    return "\n".join(lines) + "\n"
