// "Open output notebook": the notebook a run wrote, opened in Lab when it lies under the Jupyter
// server's root (Lab's contents API only reaches files there), else its path said in a dialog.

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

/** `absolute` as a path relative to the server's root `root` ("" for the root itself), or null
 * when it lies outside it. Both are POSIX paths; `..` and `.` segments are resolved first. */
export function underRoot(absolute: string, root: string): string | null {
  const parts = (path: string) => {
    const kept: string[] = [];
    for (const part of path.split('/')) {
      if (part === '..') {
        kept.pop();
      } else if (part && part !== '.') {
        kept.push(part);
      }
    }
    return kept;
  };
  if (!absolute.startsWith('/') || !root.startsWith('/')) {
    return null;
  }
  const file = parts(absolute);
  const base = parts(root);
  if (base.some((part, i) => file[i] !== part)) {
    return null;
  }
  return file.slice(base.length).join('/');
}

/** The paths `absolute` may have relative to a root given as `~/rest` (Jupyter writes the home
 * folder as ~, and the page does not know it): each tail of `absolute` that follows `/rest/`,
 * longest first (every tail when the root is ~ itself). */
export function candidatesUnderHome(absolute: string, root: string): string[] {
  const rest = root.replace(/^~\/?/, '').replace(/\/+$/, '');
  const parts = absolute.split('/').filter(Boolean);
  const found: string[] = [];
  for (let i = 1; i < parts.length; i++) {
    const before = parts.slice(0, i).join('/');
    if (!rest || before.endsWith(`/${rest}`) || before === rest) {
      found.push(parts.slice(i).join('/'));
    }
  }
  return found;
}

/** The path of `absolute` for Lab's contents API, or null when it is not under the root. */
async function labPath(app: JupyterFrontEnd, absolute: string): Promise<string | null> {
  const root = PageConfig.getOption('serverRoot');
  if (!root.startsWith('~')) {
    return underRoot(absolute, root);
  }
  for (const candidate of candidatesUnderHome(absolute, root)) {
    try {
      await app.serviceManager.contents.get(candidate, { content: false });
      return candidate;
    } catch {
      continue; // not this one
    }
  }
  return null;
}

/** Open the notebook at the absolute `path` in Lab, or say where it is. */
export async function openOutput(app: JupyterFrontEnd, path: string): Promise<unknown> {
  const relative = await labPath(app, path);
  if (relative) {
    return app.commands.execute('docmanager:open', { path: relative });
  }
  const body = document.createElement('div');
  body.className = 'dk-lab-schedule';
  const intro = document.createElement('p');
  intro.textContent =
    'The executed notebook lies outside the folder this Jupyter server serves, so Lab cannot ' +
    'open it. The node that ran it wrote it to:';
  const where = document.createElement('pre');
  where.textContent = path;
  body.append(intro, where);
  return showDialog({
    title: 'Output notebook',
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
