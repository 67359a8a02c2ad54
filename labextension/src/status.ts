// The status-bar item: the leader and how many runs go on, polled while the page is visible.

import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';
import { clusterStatus } from './api';

export class StatusItem extends Widget {
  readonly poll: Poll;

  constructor(settings: ServerConnection.ISettings, intervalMs: number, onClick: () => void) {
    super();
    this.addClass('dk-lab-status');
    this.node.title = 'dkron-lab: the leader and the runs going on (click: running now)';
    this.node.textContent = 'dkron-lab: …';
    this.node.addEventListener('click', onClick);
    this.poll = new Poll({
      factory: () => this.refresh(settings),
      frequency: { interval: intervalMs, backoff: true, max: 60_000 },
      standby: 'when-hidden',
      name: 'dkron-lab:status'
    });
  }

  set interval(ms: number) {
    this.poll.frequency = { ...this.poll.frequency, interval: ms };
  }

  private async refresh(settings: ServerConnection.ISettings): Promise<void> {
    try {
      const { leader, running } = await clusterStatus(settings);
      this.node.dataset.state = leader ? 'up' : 'down';
      this.node.textContent = `dkron-lab: ${leader ?? 'no leader'} · ${running} running`;
    } catch (error) {
      this.node.dataset.state = 'down';
      this.node.textContent = 'dkron-lab: unavailable';
      throw error; // the Poll backs off
    }
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }
}
