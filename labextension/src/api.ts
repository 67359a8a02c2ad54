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

/** GET `path` under {base_url}dkron/v1 as JSON; a status other than 2xx throws. */
export async function getJson<T>(settings: ServerConnection.ISettings, path: string): Promise<T> {
  const response = await getApi(settings, path);
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response);
  }
  return (await response.json()) as T;
}

/** One run, as GET /v1/executions and /v1/busy give it (the fields used here). */
export interface IExecution {
  id: string;
  job_name: string;
  started_at: string;
  finished_at: string;
  success: boolean;
  output: string;
  node_name: string;
  status?: string;
}

/** One job, as GET /v1/jobs?stats=1 gives it (the fields used here). */
export interface IJob {
  name: string;
  displayname?: string;
  executor: string;
  status?: string;
  disabled?: boolean;
  last_results?: { status: string; started_at: string }[];
}

/** Whether an execution's finished_at is Dkron's zero time (the run goes on). */
export function isRunning(execution: IExecution): boolean {
  return !execution.finished_at || execution.finished_at.startsWith('0001-01-01');
}

/** Where a notebook run saved the executed notebook, from its output's line
 * "executed notebook saved to <path>" (dkron_lab/executors/notebook_runner.py), or null. */
export function outputNotebook(output: string): string | null {
  const found = /^executed notebook saved to (.+?)\s*$/m.exec(output ?? '');
  return found ? found[1] : null;
}

/** The dashboard's route of a job's page and of one of its executions. */
export const jobRoute = (job: string): string => `/jobs/${encodeURIComponent(job)}/show`;
export const executionRoute = (job: string, id: string): string =>
  `/jobs/${encodeURIComponent(job)}/executions/${encodeURIComponent(id)}`;
