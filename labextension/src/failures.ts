// Failed runs said while Lab is open: GET dkron/v1/executions?status=failed&since=... is polled,
// and each run that failed since the page loaded raises one error toast whose "Show output"
// opens its execution page in the dashboard tab.

import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { getJson, IExecution } from './api';

/** How far back the query reaches: `since` filters on when a run started, and a run that
 * started a while before it failed must still be found. */
export const LOOKBACK_MS = 24 * 3600_000;

/** The failures among `runs` to say: finished at or after `loadedAt`, not said before (their
 * keys are added to `said`). */
export function newFailures(runs: IExecution[], said: Set<string>, loadedAt: number): IExecution[] {
  const fresh: IExecution[] = [];
  for (const run of runs) {
    const key = `${run.job_name}/${run.id}`;
    if (said.has(key) || Date.parse(run.finished_at) < loadedAt) {
      continue;
    }
    said.add(key);
    fresh.push(run);
  }
  return fresh.reverse(); // oldest first
}

export class FailureWatcher {
  readonly poll: Poll;
  private readonly said = new Set<string>();

  constructor(
    private readonly settings: ServerConnection.ISettings,
    private readonly showRun: (job: string, id: string) => void,
    intervalMs: number,
    private readonly loadedAt: number
  ) {
    this.poll = new Poll({
      factory: () => this.check(),
      // No backoff: a failure must be said within one interval once the API answers again.
      frequency: { interval: intervalMs, backoff: false },
      standby: 'when-hidden',
      name: 'dkron-lab:failures'
    });
  }

  private async check(): Promise<void> {
    const since = new Date(this.loadedAt - LOOKBACK_MS).toISOString();
    const query = new URLSearchParams({
      status: 'failed',
      since,
      _start: '0',
      _end: '50',
      output_size_limit: '0'
    });
    let runs: IExecution[];
    try {
      runs = await getJson<IExecution[]>(this.settings, `executions?${query}`);
    } catch (error) {
      console.warn('dkron-lab: could not read the failed runs', error);
      return;
    }
    for (const run of newFailures(runs, this.said, this.loadedAt)) {
      Notification.error(`dkron-lab: ${run.job_name} failed on ${run.node_name}`, {
        autoClose: false,
        actions: [
          {
            label: 'Show output',
            callback: () => this.showRun(run.job_name, run.id)
          }
        ]
      });
    }
  }

  dispose(): void {
    this.poll.dispose();
  }
}
