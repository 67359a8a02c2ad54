// "Schedule with dkron-lab…": the UI has no job form yet, so a dialog says the two ways to
// schedule the notebook (the %dkron magic, the REST API), prefilled with its path.

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { PageConfig, PathExt } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

/** A job name from a notebook's file name: lower case, [a-z0-9-] only. */
export function jobName(path: string): string {
  const stem = PathExt.basename(path, PathExt.extname(path));
  return stem.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '') || 'notebook';
}

function block(title: string, text: string): HTMLElement {
  const section = document.createElement('div');
  const heading = document.createElement('p');
  heading.textContent = title;
  const pre = document.createElement('pre');
  pre.textContent = text;
  section.append(heading, pre);
  return section;
}

/** The dialog's body for the notebook at `path` (relative to the server's root). */
export function scheduleBody(path: string, apiUrl: string): Widget {
  const name = jobName(path);
  const root = PageConfig.getOption('serverRoot');
  const absolute = root ? `${root.replace(/\/$/, '')}/${path}` : path;
  const body = new Widget();
  body.addClass('dk-lab-schedule');
  const intro = document.createElement('p');
  intro.append('Notebook: ');
  const code = document.createElement('code');
  code.textContent = path;
  intro.append(code);
  const file = PathExt.basename(path);
  const quoted = /^[\w./-]+$/.test(file) ? file : `"${file}"`;
  const magic = `%dkron job ${name} --schedule @daily --notebook ${quoted} --kernel python3`;
  const job = {
    name,
    schedule: '@daily',
    executor: 'notebook',
    executor_config: { path: absolute }
  };
  const curl = `POST ${apiUrl}jobs\n${JSON.stringify(job, null, 2)}`;
  body.node.append(
    intro,
    block('In a notebook of the same folder (a relative path is made absolute there):', magic),
    block(
      'Or with the REST API (the notebook executor needs an absolute path' +
        (absolute.startsWith('~') ? ': write out ~' : '') +
        '):',
      curl
    ),
    Object.assign(document.createElement('p'), {
      textContent:
        'The dashboard tab lists the job once it exists; docs/executors.md has the notebook ' +
        'executor\'s options (parameters, kernel, output path).'
    })
  );
  return body;
}

export async function showSchedule(path: string, apiUrl: string): Promise<void> {
  await showDialog({
    title: 'Schedule with dkron-lab',
    body: scheduleBody(path, apiUrl),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
