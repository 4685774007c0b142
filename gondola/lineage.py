"""Run lineage: every pipeline run emits OpenLineage events (start, then complete or fail).

A run names its job (``gondola.transform``, ``gondola.train``, ...), its input and output
datasets with their Delta versions (``DatasetVersionDatasetFacet``), their schemas and, where
a step masks data, a column-lineage facet that says so. Events go to two places:

* the OpenLineage transport chosen by ``GONDOLA_LINEAGE``: ``file:PATH`` (JSON lines appended
  to PATH), an ``http(s)://`` URL (Marquez, or a Purview bridge; ``GONDOLA_LINEAGE_API_KEY``
  for a bearer token), or unset / ``off`` (no transport);
* a ``sink`` the caller passes: the cloud stores every event in the lake's ``meta.lineage``
  table, which ``gondola lineage`` walks.

The ``openlineage-python`` client builds and sends the events; a transport failure is logged
and never fails the run it describes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["Dataset", "LineageRun", "Lineage", "lineage_from_env", "PRODUCER"]

log = logging.getLogger(__name__)

PRODUCER = "urn:gondola:lineage:1"  # identifies the emitting code in each event (a URI, as the spec asks)
_NAMESPACE = "gondola"


@dataclass
class Dataset:
    """A table (or file) a run reads or writes, at a version."""

    namespace: str
    name: str
    version: int | str | None = None
    #: ``[(column, type, description), ...]`` for the schema facet
    columns: list[tuple[str, str, str]] = field(default_factory=list)
    #: output column -> ``[(input namespace, input name, input column, masking)]``
    column_lineage: dict[str, list[tuple[str, str, str, bool]]] = field(default_factory=dict)


@dataclass
class LineageRun:
    """What a running job declares; ``outputs`` and ``facts`` may be filled in while it runs."""

    job: str
    run_id: str
    inputs: list[Dataset]
    outputs: list[Dataset] = field(default_factory=list)
    #: small scalar facts about the run (row counts, model version) kept as a run facet
    facts: dict[str, object] = field(default_factory=dict)


class Lineage:
    """Emits OpenLineage run events through a client and to a sink."""

    def __init__(self, client=None, sink: Callable[[dict], None] | None = None, namespace: str = _NAMESPACE):
        self._client = client
        self._sink = sink
        self.namespace = namespace

    @contextlib.contextmanager
    def run(self, job: str, inputs: list[Dataset] | None = None) -> Iterator[LineageRun]:
        """START now; COMPLETE when the block ends, FAIL (with the error) when it raises."""
        from openlineage.client.uuid import generate_new_uuid

        handle = LineageRun(job=job, run_id=str(generate_new_uuid()), inputs=list(inputs or []))
        self._emit("START", handle)
        try:
            yield handle
        except BaseException as exc:
            self._emit("FAIL", handle, error=exc)
            raise
        self._emit("COMPLETE", handle)

    # ---- events --------------------------------------------------------------------------------

    def event(self, state: str, run: LineageRun, error: BaseException | None = None):
        """The ``RunEvent`` for ``run`` in ``state`` (START, COMPLETE, FAIL)."""
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run

        def facets(d: Dataset) -> dict:
            from openlineage.client.facet_v2 import column_lineage_dataset as cl
            from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

            out: dict = {}
            if d.version is not None:
                out["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(d.version))
            if d.columns:
                out["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
                    schema_dataset.SchemaDatasetFacetFields(name=n, type=t, description=doc) for n, t, doc in d.columns])
            if d.column_lineage:
                out["columnLineage"] = cl.ColumnLineageDatasetFacet(fields={
                    col: cl.Fields(inputFields=[
                        cl.InputField(namespace=ns, name=name, field=src, transformations=[cl.Transformation(
                            type="DIRECT", subtype="TRANSFORMATION" if masked else "IDENTITY", masking=masked,
                            description="keyed hash (pseudonym)" if masked else None)])
                        for ns, name, src, masked in sources])
                    for col, sources in d.column_lineage.items()})
            return out

        run_facets: dict = {}
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{type(error).__name__}: {error}"[:1000], programmingLanguage="PYTHON")
        if run.facts:
            run_facets["gondola_facts"] = _facts_facet()(facts={k: run.facts[k] for k in sorted(run.facts)})
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        return RunEvent(
            eventType=getattr(RunState, state), eventTime=now, producer=PRODUCER,
            run=Run(runId=run.run_id, facets=run_facets), job=Job(namespace=self.namespace, name=run.job),
            inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=facets(d)) for d in run.inputs],
            outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=facets(d))
                     for d in (run.outputs if state != "START" else [])],
        )

    def _emit(self, state: str, run: LineageRun, error: BaseException | None = None) -> None:
        from openlineage.client.serde import Serde

        event = self.event(state, run, error)
        if self._client is not None:
            try:
                self._client.emit(event)
            except Exception as exc:  # lineage must never fail the run it describes
                log.warning("lineage: %s event of %s not sent: %s", state, run.job, exc)
        if self._sink is not None:
            try:
                self._sink(Serde.to_dict(event))
            except Exception as exc:
                log.warning("lineage: %s event of %s not stored: %s", state, run.job, exc)


_FACTS_CLASS = None


def _facts_facet():
    """A custom run facet (``gondola_facts``) with the run's counts; made on first use so importing
    this module does not import the OpenLineage client."""
    global _FACTS_CLASS
    if _FACTS_CLASS is None:
        import attr
        from openlineage.client.facet_v2 import RunFacet

        @attr.define
        class GondolaFactsRunFacet(RunFacet):
            facts: dict = attr.field(factory=dict)

        _FACTS_CLASS = GondolaFactsRunFacet
    return _FACTS_CLASS


def lineage_from_env(sink: Callable[[dict], None] | None = None, env: dict[str, str] | None = None) -> Lineage:
    """A ``Lineage`` whose transport ``GONDOLA_LINEAGE`` picks (module docstring).

    Raises:
        ConfigError: a ``GONDOLA_LINEAGE`` that is neither ``off``, ``file:PATH`` nor an http(s) URL.
    """
    from gondola.errors import ConfigError

    env = os.environ if env is None else env
    target = (env.get("GONDOLA_LINEAGE") or "off").strip()
    if target == "off":
        return Lineage(None, sink)
    if target.startswith("file:"):
        path = target[5:]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        config = {"type": "file", "log_file_path": path, "append": True}
    elif target.startswith(("http://", "https://")):
        config = {"type": "http", "url": target}
        if env.get("GONDOLA_LINEAGE_API_KEY"):
            config["auth"] = {"type": "api_key", "apiKey": env["GONDOLA_LINEAGE_API_KEY"]}
    else:
        raise ConfigError(f"GONDOLA_LINEAGE={target!r}: use off, file:PATH or an http(s):// URL")
    from openlineage.client import OpenLineageClient

    return Lineage(OpenLineageClient(config={"transport": config}), sink)
