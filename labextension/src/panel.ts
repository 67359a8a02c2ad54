// The left-side panel: the jobs with their last status and the runs going on, read from
// GET dkron/v1/jobs?stats=1 and dkron/v1/busy every few seconds while the panel is shown. A job
// opens its page in the dashboard tab, a run its execution page; a notebook job that has run has
// "Open output notebook".

import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';
import { getJson, IExecution, IJob } from './api';
import { dkronIcon } from './icon';

/** How many jobs the panel lists (the dashboard has them all). */
export const PANEL_JOBS = 200;

/** What a click in the panel asks for. */
export interface IPanelActions {
  openJob(job: string): void;
  openRun(job: string, id: string): void;
  openOutput(job: string): void;
  openDashboard(): void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

/** A job's last status in a word: its newest run's, else "never run". */
export function lastStatus(job: IJob): string {
  return job.last_results?.[0]?.status ?? (job.status && job.status !== 'untriggered'
    ? job.status
    : 'never run');
}

export class JobsPanel extends Widget {
  readonly poll: Poll;

  constructor(
    private readonly settings: ServerConnection.ISettings,
    private readonly actions: IPanelActions,
    intervalMs = 3000
  ) {
    super();
    this.id = 'dkron-lab-panel';
    this.addClass('dk-lab-panel');
    this.title.icon = dkronIcon;
    this.title.caption = 'dkron-lab: jobs and running runs';
    const head = el('div', 'dk-lab-panel-head');
    const title = el('h2', '', 'dkron-lab');
    const open = el('button', 'jp-Button jp-mod-styled jp-mod-reject', 'Dashboard');
    open.addEventListener('click', () => actions.openDashboard());
    head.append(title, open);
    this.runs = el('ul', 'dk-lab-panel-runs');
    this.jobs = el('ul', 'dk-lab-panel-jobs');
    this.message = el('p', 'dk-lab-panel-message', 'Loading…');
    this.node.append(
      head,
      this.message,
      el('h3', '', 'Running'),
      this.runs,
      el('h3', '', 'Jobs'),
      this.jobs
    );
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: intervalMs, backoff: true, max: 60_000 },
      standby: () => !this.isVisible || document.visibilityState === 'hidden',
      name: 'dkron-lab:panel'
    });
  }

  private readonly runs: HTMLUListElement;
  private readonly jobs: HTMLUListElement;
  private readonly message: HTMLParagraphElement;

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private async refresh(): Promise<void> {
    try {
      const [jobs, running] = await Promise.all([
        getJson<IJob[]>(this.settings, `jobs?stats=1&_start=0&_end=${PANEL_JOBS}`),
        getJson<IExecution[]>(this.settings, 'busy')
      ]);
      this.message.textContent = jobs.length ? '' : 'No jobs yet.';
      this.showRuns(running);
      this.showJobs(jobs, new Set(running.map(run => run.job_name)));
    } catch (error) {
      this.message.textContent = 'The dkron-lab API does not answer.';
      throw error; // the Poll backs off
    }
  }

  private showRuns(running: IExecution[]): void {
    const items = running.map(run => {
      const item = el('li', 'dk-lab-panel-run');
      item.dataset.job = run.job_name;
      const link = el('button', 'dk-lab-panel-link', run.job_name);
      link.title = `Open this run (${run.id}) in the dashboard`;
      link.addEventListener('click', () => this.actions.openRun(run.job_name, run.id));
      const since = new Date(run.started_at);
      const detail = el(
        'span',
        'dk-lab-panel-detail',
        `${run.status ?? 'running'} on ${run.node_name} since ${since.toLocaleTimeString()}`
      );
      item.append(link, detail);
      return item;
    });
    this.runs.replaceChildren(
      ...(items.length ? items : [el('li', 'dk-lab-panel-none', 'Nothing runs.')])
    );
  }

  private showJobs(jobs: IJob[], running: Set<string>): void {
    this.jobs.replaceChildren(
      ...jobs.map(job => {
        const item = el('li', 'dk-lab-panel-job');
        item.dataset.job = job.name;
        const status = lastStatus(job);
        item.dataset.status = status;
        item.dataset.running = String(running.has(job.name));
        const link = el('button', 'dk-lab-panel-link', job.displayname || job.name);
        link.title = `Open ${job.name} in the dashboard`;
        link.addEventListener('click', () => this.actions.openJob(job.name));
        const detail = el(
          'span',
          'dk-lab-panel-detail',
          `${job.executor} · ${job.disabled ? 'disabled · ' : ''}${status}` +
            (running.has(job.name) ? ' · running' : '')
        );
        item.append(el('span', 'dk-lab-panel-dot'), link, detail);
        if (job.executor === 'notebook' && job.last_results?.length) {
          const output = el('button', 'dk-lab-panel-output', 'Open output notebook');
          output.title = "Open the notebook its newest run wrote";
          output.addEventListener('click', () => this.actions.openOutput(job.name));
          item.append(output);
        }
        return item;
      })
    );
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }
}
