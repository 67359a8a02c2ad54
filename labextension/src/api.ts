// Calls to the dkron-lab server extension's REST API, {base_url}dkron/v1/..., with the app's
// server settings: ServerConnection adds Jupyter's token or the _xsrf header as Lab does.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The page the dashboard tab shows: the web UI served by the server extension. */
export function uiUrl(settings: ServerConnection.ISettings, route = '/'): string {
  const hash = route.startsWith('#') ? route : `#${route}`;
  return URLExt.join(settings.baseUrl, 'dkron', 'ui', '/') + hash;
}

/** GET `path` under {base_url}dkron/v1 (the Response, whatever its status). */
export function getApi(
  settings: ServerConnection.ISettings,
  path: string
): Promise<Response> {
  const url = URLExt.join(settings.baseUrl, 'dkron', 'v1', path);
  return ServerConnection.makeRequest(url, { method: 'GET' }, settings);
}

/** What the status-bar item shows. */
export interface IClusterStatus {
  leader: string | null;
  running: number;
}

/** The leader's name and how many runs go on in the cluster (two small reads). */
export async function clusterStatus(
  settings: ServerConnection.ISettings
): Promise<IClusterStatus> {
  const [leader, running] = await Promise.all([
    getApi(settings, 'leader'),
    getApi(settings, 'executions?status=running&_start=0&_end=1&output_size_limit=0')
  ]);
  if (!running.ok) {
    throw new ServerConnection.ResponseError(running);
  }
  const name = leader.ok ? ((await leader.json())?.Name ?? null) : null;
  const total = Number(running.headers.get('X-Total-Count'));
  const rows = await running.json();
  return { leader: name, running: Number.isFinite(total) ? total : rows.length };
}
