"""The benchmark's floor: a bare workflow of the cancellation's shape, and its worker.

``SkeletonWorkflow`` starts, waits for one update (the merchant's "accept"), runs three
activities that do nothing, and completes. The update answers once the activities are done, so
the caller learns that the run finished from the one call it makes anyway; a second call (the
long poll behind ``result()``) would add a round trip the product's measurement does not have
(the bench sees the product's ``canceled`` in PostgreSQL, without asking Temporal).

This module imports only ``temporalio`` at the top on purpose: the workflow sandbox imports a
workflow's module afresh for every run, so anything imported here would be paid for by every
skeleton run and the floor would no longer be a floor. The worker's own imports live inside
:func:`serve`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

SKELETON_TASK_QUEUE = "bench-skeleton"
"""The skeleton's own task queue (it never shares a server with the product anyway)."""

ACTIVITIES_PER_RUN = 3
"""As many activities as the happy path runs after the merchant's acceptance."""

# Same start-to-close as the product's store activities; a no-op never comes near it.
ACTIVITY_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="BenchDoNothing")
async def do_nothing() -> None:
    """Nothing at all: what an activity costs the worker and the server on its own."""


@workflow.defn(name="BenchSkeleton")
class SkeletonWorkflow:
    """Start, wait for one update, run three no-op activities, complete."""

    def __init__(self) -> None:
        self._accepted = False
        self._done = False

    @workflow.run
    async def run(self) -> None:
        """Wait for the acceptance, then run the activities one after the other."""
        await workflow.wait_condition(lambda: self._accepted)
        for _ in range(ACTIVITIES_PER_RUN):
            await workflow.execute_activity(do_nothing, start_to_close_timeout=ACTIVITY_TIMEOUT)
        self._done = True
        # As the product does: the update's answer goes out before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def accept(self) -> None:
        """The one message of the run; answers when the work is done (the run completes in
        the same workflow task)."""
        self._accepted = True
        await workflow.wait_condition(lambda: self._done)


async def serve() -> None:
    """Serve the skeleton on :data:`SKELETON_TASK_QUEUE` until SIGTERM or SIGINT."""
    import asyncio
    import signal

    from temporalio.worker import Worker

    from starter.client import connect_temporal
    from starter.config import Settings

    settings = Settings.from_env()
    client = await connect_temporal(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=SKELETON_TASK_QUEUE,
        workflows=[SkeletonWorkflow],
        activities=[do_nothing],
    )
    async with worker:
        # The same line worker.py prints, so the bench waits for both the same way.
        print(f"worker ready on task queue {SKELETON_TASK_QUEUE}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    import asyncio

    # Run the copy imported by its real name: the sandbox re-imports a workflow's module by
    # name, and "__main__" is not one it can import.
    from tools import bench_skeleton

    asyncio.run(bench_skeleton.serve())
