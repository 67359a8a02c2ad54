// "Schedule this notebook": a dialog whose body is the web UI's job form (#/jobs/new, with its
// cron helper, time zones, executor fields and tags) in a frame, prefilled from the route's
// query for the notebook executor. The form tells this page by postMessage when it saved the job
// or was cancelled, and the dialog closes; the same form as the dashboard's, one code base.

import { Dialog } from '@jupyterlab/apputils';
import { PageConfig, PathExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';
import { uiUrl } from './api';
import { copyThemeVariables } from './dashboard';

/** A job name from a notebook's file name: lower case, [a-z0-9-] only. */
export function jobName(path: string): string {
  const stem = PathExt.basename(path, PathExt.extname(path));
  return stem.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '') || 'notebook';
}

/** The notebook's absolute path from its path under the server's root (`~/...` when Jupyter
 * gives the root so: the page does not know the home folder, and the form's server answer then
 * says the path must be absolute). */
export function absolutePath(path: string, root = PageConfig.getOption('serverRoot')): string {
  return root ? `${root.replace(/\/+$/, '')}/${path}` : path;
}

/** The form's route, prefilled for the notebook at `path` (relative to the server's root). */
export function scheduleRoute(path: string, root?: string): string {
  const query = new URLSearchParams({
    executor: 'notebook',
    path: absolutePath(path, root),
    name: jobName(path),
    schedule: '@daily'
  });
  return `/jobs/new?${query}`;
}

/** What the form in the frame says (views/form.js, tellFramer). */
interface IFormMessage {
  source: 'dkron-lab-form';
  event: 'saved' | 'cancelled';
  name?: string;
}

function isFormMessage(data: unknown): data is IFormMessage {
  return (
    typeof data === 'object' && data !== null && (data as IFormMessage).source === 'dkron-lab-form'
  );
}

/** The dialog's body: the form in a frame, the UI's own header hidden, Lab's theme applied. */
function formFrame(url: string, light: boolean): { widget: Widget; frame: HTMLIFrameElement } {
  const widget = new Widget();
  widget.addClass('dk-lab-schedule-form');
  const frame = document.createElement('iframe');
  frame.title = 'Schedule this notebook';
  frame.setAttribute('sandbox', 'allow-scripts allow-same-origin allow-forms');
  frame.style.colorScheme = light ? 'light' : 'dark';
  frame.addEventListener('load', () => {
    copyThemeVariables(frame);
    const header = frame.contentDocument?.querySelector<HTMLElement>('header.dk-bar');
    if (header) {
      header.style.display = 'none'; // the dialog has its own title; links would lead away
    }
  });
  frame.src = url;
  widget.node.append(frame);
  return { widget, frame };
}

/** Show the dialog for the notebook at `path` (relative to the server's root); resolves with
 * the name of the job the form created, or null when it was closed without saving. */
export async function showSchedule(
  settings: ServerConnection.ISettings,
  path: string,
  light: boolean
): Promise<string | null> {
  const { widget, frame } = formFrame(uiUrl(settings, scheduleRoute(path)), light);
  const dialog = new Dialog({
    title: `Schedule ${PathExt.basename(path)}`,
    body: widget,
    buttons: [Dialog.cancelButton({ label: 'Close' })]
  });
  dialog.addClass('dk-lab-schedule-dialog');
  let saved: string | null = null;
  const listen = (event: MessageEvent) => {
    if (
      event.origin !== window.location.origin ||
      event.source !== frame.contentWindow ||
      !isFormMessage(event.data)
    ) {
      return;
    }
    saved = event.data.event === 'saved' ? (event.data.name ?? null) : null;
    dialog.resolve();
  };
  window.addEventListener('message', listen);
  try {
    await dialog.launch();
  } finally {
    window.removeEventListener('message', listen);
  }
  return saved;
}
