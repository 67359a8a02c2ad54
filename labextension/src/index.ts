// dkron-lab in JupyterLab: the dashboard (the web UI served by the server extension at
// {base_url}dkron/ui/) in a main-area tab opened from the launcher and the command palette and
// restored on reload; a status-bar item; "Schedule with dkron-lab…" on notebooks in the file
// browser; and a dialog when the server extension is missing.

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  IThemeManager,
  Notification,
  showDialog,
  WidgetTracker
} from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { getApi, uiUrl } from './api';
import { Dashboard } from './dashboard';
import { dkronIcon } from './icon';
import { showSchedule } from './schedule';
import { StatusItem } from './status';
import { Widget } from '@lumino/widgets';

const PLUGIN_ID = 'dkron-lab:plugin';

export namespace CommandIDs {
  export const open = 'dkron-lab:open';
  export const schedule = 'dkron-lab:schedule-notebook';
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

/** The dialog that says the server extension is missing and how to enable it. */
function showMissing(): Promise<unknown> {
  const body = document.createElement('div');
  body.className = 'dk-lab-schedule';
  body.innerHTML =
    '<p>The dkron-lab server extension does not answer at <code>dkron/v1/</code>, so the ' +
    'dashboard and the status item have nothing to show.</p>' +
    '<p>Enable it, then restart Jupyter:</p>' +
    '<pre>jupyter server extension enable dkron_lab\njupyter server extension list</pre>' +
    '<p><code>pip install dkron-lab</code> enables it; it is missing when the server was ' +
    'started with <code>--ServerApp.jpserver_extensions</code> turning it off, or runs from ' +
    'another environment than the one dkron-lab is installed in.</p>';
  return showDialog({
    title: 'dkron-lab server extension not found',
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton()]
  });
}

/** At start: a 404 from the server extension is said in a notification whose action opens
 * the dialog (a modal at start would block whatever the user, or a test, does first). */
async function probe(app: JupyterFrontEnd): Promise<void> {
  if ((await serverExtensionMissing(app)) !== true) {
    return;
  }
  Notification.warning('dkron-lab: the server extension is not enabled in this Jupyter server.', {
    autoClose: 8000,
    actions: [{ label: 'How to enable it', callback: () => void showMissing() }]
  });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The dkron-lab dashboard, status-bar item and notebook scheduling.',
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
    const server = app.serviceManager.serverSettings;
    const tracker = new WidgetTracker<Dashboard>({ namespace: 'dkron-lab' });
    const isLight = () => (themes?.theme ? themes.isLight(themes.theme) : true);

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
      isVisible: () => {
        const item = browser?.selectedItems().next();
        return Boolean(item && !item.done && item.value.type === 'notebook');
      },
      execute: async () => {
        const item = browser?.selectedItems().next();
        if (!item || item.done) {
          return;
        }
        await app.commands.execute(CommandIDs.open, { route: '/jobs' });
        await showSchedule(item.value.path, URLExt.join(server.baseUrl, 'dkron', 'v1', '/'));
      }
    });

    launcher?.add({ command: CommandIDs.open, category: 'Other', rank: 1 });
    palette?.addItem({ command: CommandIDs.open, category: 'dkron-lab' });
    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: () => ({ restoring: true }),
        name: () => 'dashboard'
      });
    }

    if (statusBar) {
      const item = new StatusItem(server, 5000, () => {
        void app.commands.execute(CommandIDs.open, { route: '/busy' });
      });
      statusBar.registerStatusItem(PLUGIN_ID, { item, align: 'left', rank: 100 });
      settings?.load(PLUGIN_ID).then(loaded => {
        const apply = () => {
          item.interval = 1000 * (loaded.composite.refreshInterval as number);
        };
        apply();
        loaded.changed.connect(apply);
      }).catch(() => undefined);
    }

    void app.restored.then(() => probe(app));
  }
};

export default plugin;
