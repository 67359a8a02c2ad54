// dkron-lab in JupyterLab: the dashboard (the web UI served by the server extension at
// {base_url}dkron/ui/) in a main-area tab opened from the launcher and the command palette and
// restored on reload; a left-side panel of jobs and running runs; a status-bar item; "Schedule
// this notebook" (file browser and notebook toolbar) with the UI's job form in a dialog; "Open
// output notebook"; a toast for each failed run; a dialog when the server extension is missing.

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  IThemeManager,
  showDialog,
  WidgetTracker
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Toolbar, ToolbarButton } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { executionRoute, getApi, IExecution, jobRoute, outputNotebook, uiUrl } from './api';
import { Dashboard } from './dashboard';
import { FailureWatcher } from './failures';
import { dkronIcon } from './icon';
import { openOutput } from './output';
import { JobsPanel } from './panel';
import { showSchedule } from './schedule';
import { StatusItem } from './status';

const PLUGIN_ID = 'dkron-lab:plugin';

export namespace CommandIDs {
  export const open = 'dkron-lab:open';
  export const schedule = 'dkron-lab:schedule-notebook';
  export const openOutput = 'dkron-lab:open-output';
}

/** Whether GET {base_url}dkron/v1/ says 404: the server extension is not enabled (null: the
 * server did not answer, 503 while the node starts is an answer). */
async function serverExtensionMissing(app: JupyterFrontEnd): Promise<boolean | null> {
  try {
    return (await getApi(app.serviceManager.serverSettings, '/')).status === 404;
  } catch {
    return null;
  }
}

/** The session's key that says the missing-extension dialog was shown. */
export const MISSING_SHOWN = 'dkron-lab:missing-extension-shown';

/** The dialog that says the server extension is missing and how to enable it. */
function showMissing(): Promise<unknown> {
  const body = document.createElement('div');
  body.className = 'dk-lab-schedule';
  body.innerHTML =
    '<p>The dkron-lab server extension does not answer at <code>dkron/v1/</code>, so the ' +
    'dashboard, the jobs panel and the status item have nothing to show.</p>' +
    '<p>Install and enable it in the environment Jupyter runs from, then restart Jupyter:</p>' +
    '<pre>pip install dkron-lab\njupyter server extension enable dkron_lab\n' +
    'jupyter server extension list</pre>' +
    '<p><code>pip install dkron-lab</code> enables it; it is missing when the server was ' +
    'started with <code>--ServerApp.jpserver_extensions</code> turning it off, or runs from ' +
    'another environment than the one dkron-lab is installed in.</p>';
  return showDialog({
    title: 'dkron-lab server extension not found',
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton()]
  });
}

/** At start: a 404 from the server extension is said in a dialog, once per browser session
 * (sessionStorage), whether or not more Lab tabs open. Returns whether it was missing. */
async function probe(app: JupyterFrontEnd): Promise<boolean> {
  const missing = (await serverExtensionMissing(app)) === true;
  if (missing && !window.sessionStorage.getItem(MISSING_SHOWN)) {
    window.sessionStorage.setItem(MISSING_SHOWN, '1');
    await showMissing();
  }
  return missing;
}

/** The notebook the schedule command is about: its `path` argument, else the file browser's
 * selected notebook, else the notebook in the current tab. */
function notebookPath(
  app: JupyterFrontEnd,
  browser: IDefaultFileBrowser | null,
  args: { path?: unknown }
): string | null {
  if (typeof args.path === 'string' && args.path) {
    return args.path;
  }
  const item = browser?.selectedItems().next();
  if (item && !item.done && item.value.type === 'notebook') {
    return item.value.path;
  }
  const current = app.shell.currentWidget as { context?: { path?: string } } | null;
  const open = current?.context?.path;
  return open?.endsWith('.ipynb') ? open : null;
}

/** The newest output notebook among a job's runs (the newest ten), or null. */
async function newestOutput(app: JupyterFrontEnd, job: string): Promise<string | null> {
  const response = await getApi(
    app.serviceManager.serverSettings,
    `jobs/${encodeURIComponent(job)}/executions?_start=0&_end=10`
  );
  if (!response.ok) {
    return null;
  }
  for (const run of (await response.json()) as IExecution[]) {
    const path = outputNotebook(run.output);
    if (path) {
      return path;
    }
  }
  return null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The dkron-lab dashboard, jobs panel, status-bar item and notebook scheduling.',
  autoStart: true,
  optional: [
    ILauncher,
    ICommandPalette,
    ILayoutRestorer,
    IStatusBar,
    IDefaultFileBrowser,
    IThemeManager,
    ISettingRegistry
  ],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null,
    browser: IDefaultFileBrowser | null,
    themes: IThemeManager | null,
    settings: ISettingRegistry | null
  ) => {
    const loadedAt = Date.now(); // failures after this are toasted
    const server = app.serviceManager.serverSettings;
    const tracker = new WidgetTracker<Dashboard>({ namespace: 'dkron-lab' });
    const isLight = () => (themes?.theme ? themes.isLight(themes.theme) : true);
    const openRoute = (route: string) => void app.commands.execute(CommandIDs.open, { route });

    app.commands.addCommand(CommandIDs.open, {
      label: 'dkron-lab dashboard',
      caption: 'Jobs, runs and the cluster of the dkron-lab node in this Jupyter server',
      icon: dkronIcon,
      execute: args => {
        const route = (args.route as string) || '/';
        if (!args.restoring) {
          void serverExtensionMissing(app).then(missing => missing && showMissing());
        }
        let dashboard = tracker.currentWidget;
        if (!dashboard || dashboard.isDisposed) {
          dashboard = new Dashboard();
          void tracker.add(dashboard);
          app.shell.add(dashboard, 'main');
        }
        dashboard.showUrl(uiUrl(server, route));
        dashboard.setTheme(isLight());
        app.shell.activateById(dashboard.id);
        return dashboard;
      }
    });
    themes?.themeChanged.connect(() => {
      tracker.forEach(dashboard => dashboard.setTheme(isLight()));
    });

    app.commands.addCommand(CommandIDs.schedule, {
      label: 'Schedule with dkron-lab…',
      caption: 'Schedule this notebook as a dkron-lab job',
      icon: dkronIcon,
      isVisible: () => notebookPath(app, browser, {}) !== null,
      execute: async args => {
        const path = notebookPath(app, browser, args);
        if (!path) {
          return null;
        }
        const name = await showSchedule(server, path, isLight());
        if (name) {
          openRoute(jobRoute(name));
        }
        return name;
      }
    });

    app.commands.addCommand(CommandIDs.openOutput, {
      label: 'Open output notebook',
      caption: 'Open the notebook a dkron-lab run wrote (args: path, or job for its newest)',
      execute: async args => {
        let path = typeof args.path === 'string' ? args.path : null;
        if (!path && typeof args.job === 'string') {
          path = await newestOutput(app, args.job);
          if (!path) {
            return showDialog({
              title: 'No output notebook',
              body: `None of the newest runs of ${args.job} says where it saved a notebook.`,
              buttons: [Dialog.okButton()]
            });
          }
        }
        return path ? openOutput(app, path) : null;
      }
    });

    // The notebook toolbar's button: it schedules the notebook of its own panel.
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (panel, context) => {
        const button = new ToolbarButton({
          icon: dkronIcon,
          label: 'Schedule',
          tooltip: 'Schedule this notebook with dkron-lab',
          className: 'dk-lab-schedule-button',
          onClick: () =>
            void app.commands.execute(CommandIDs.schedule, { path: context.path })
        });
        (panel as Widget & { toolbar: Toolbar }).toolbar.insertItem(
          10,
          'dkron-lab-schedule',
          button
        );
        return button;
      }
    });

    const panel = new JobsPanel(server, {
      openJob: job => openRoute(jobRoute(job)),
      openRun: (job, id) => openRoute(executionRoute(job, id)),
      openOutput: job => void app.commands.execute(CommandIDs.openOutput, { job }),
      openDashboard: () => openRoute('/')
    });
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, 'dkron-lab-panel');

    launcher?.add({ command: CommandIDs.open, category: 'Other', rank: 1 });
    palette?.addItem({ command: CommandIDs.open, category: 'dkron-lab' });
    palette?.addItem({ command: CommandIDs.schedule, category: 'dkron-lab' });
    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: () => ({ restoring: true }),
        name: () => 'dashboard'
      });
    }

    if (statusBar) {
      const item = new StatusItem(server, 5000, () => openRoute('/busy'));
      statusBar.registerStatusItem(PLUGIN_ID, { item, align: 'left', rank: 100 });
      settings?.load(PLUGIN_ID).then(loaded => {
        const apply = () => {
          item.interval = 1000 * (loaded.composite.refreshInterval as number);
        };
        apply();
        loaded.changed.connect(apply);
      }).catch(() => undefined);
    }

    void app.restored.then(async () => {
      if (!(await probe(app))) {
        const showRun = (job: string, id: string) => openRoute(executionRoute(job, id));
        new FailureWatcher(server, showRun, 5000, loadedAt);
      }
    });
  }
};

export default plugin;
