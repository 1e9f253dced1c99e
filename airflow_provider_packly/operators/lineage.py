"""Lineage of the Packly operators: the Airflow asset URI of a written file, and OpenLineage datasets.

Only ``asset_uri`` is used by every run. The OpenLineage part (``operator_lineage``) imports
``apache-airflow-providers-openlineage`` (the provider's ``openlineage`` extra) inside the
function: it is called by that provider's listener only, so a DAG file that imports the
operators pays nothing for OpenLineage, installed or not.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import ObjectStoragePath

__all__ = ["LOCAL_PROTOCOLS", "asset_uri", "operator_lineage"]

#: ``ObjectStoragePath.protocol`` of a file on the worker's own disk.
LOCAL_PROTOCOLS = ("", "file", "local")


def asset_uri(path: ObjectStoragePath, *, absolute_only: bool = False) -> str | None:
    """The URI naming ``path`` as an Airflow ``Asset``: ``file:///abs/box.pdf``, ``s3://bucket/key``.

    A storage connection is not part of it (``str(path)`` would say ``s3://aws_default@bucket/key``).
    A relative local path is made absolute against the current folder, or with
    ``absolute_only`` (when a DAG file is parsed, not where the task will run) gives ``None``.
    """
    if path.protocol in LOCAL_PROTOCOLS:
        local = Path(path.path)
        if absolute_only and not local.is_absolute():
            return None
        return local.absolute().as_uri()
    uri: str = path.as_uri()
    return uri


def operator_lineage(read: tuple[str, str] | None, written: ObjectStoragePath | None) -> OperatorLineage[Any, Any]:
    """OpenLineage's view of one run: the Packly endpoint it read, the file it wrote.

    ``read`` is the connection's Base URL and the endpoint path; its dataset's namespace is the
    Base URL's ``scheme://host[:port]`` and its name the path of the endpoint under it. A local
    file is namespace ``file`` and its absolute path (as Airflow's common.io provider names
    files); an object-storage file is ``scheme://bucket`` and its key.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs = []
    if read is not None:
        base_url, endpoint = read
        base = urllib.parse.urlsplit(base_url)
        target = urllib.parse.urlsplit(endpoint)
        name = target.path if target.scheme else f"{base.path.rstrip('/')}/{target.path.lstrip('/')}"
        inputs.append(Dataset(namespace=f"{base.scheme}://{base.netloc}", name=name))
    outputs = []
    if written is not None:
        if written.protocol in LOCAL_PROTOCOLS:
            outputs.append(Dataset(namespace="file", name=str(Path(written.path).absolute())))
        else:
            outputs.append(Dataset(namespace=written.namespace, name=written.key))
    return OperatorLineage(inputs=inputs, outputs=outputs)
