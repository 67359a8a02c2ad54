// The dashboard tab: the web UI ({base_url}dkron/ui/) in an iframe, as dask-labextension shows
// Dask's dashboard. The page is same-origin, so it uses Jupyter's cookie and _xsrf.

import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';
import { dkronIcon } from './icon';

export class Dashboard extends MainAreaWidget<IFrame> {
  constructor() {
    super({
      content: new IFrame({
        sandbox: ['allow-scripts', 'allow-same-origin', 'allow-forms', 'allow-downloads']
      })
    });
    this.id = 'dkron-lab-dashboard';
    this.addClass('dk-lab-dashboard');
    this.title.label = 'dkron-lab';
    this.title.caption = 'dkron-lab dashboard';
    this.title.icon = dkronIcon;
    this.title.closable = true;
  }

  /** Show `url` (the UI page with a hash route). */
  showUrl(url: string): void {
    if (this.content.url !== url) {
      this.content.url = url;
    }
  }

  /** Lab's theme for the page: its colours are --dk-* variables fed by --jp-* ones when they
   * are defined, so Lab's --jp-* values are copied onto the page's root (CSSOM, which its
   * Content-Security-Policy allows), now and whenever the page loads. */
  setTheme(light: boolean): void {
    const frame = this.content.node.querySelector('iframe');
    if (!frame) {
      return;
    }
    frame.style.colorScheme = light ? 'light' : 'dark';
    const apply = () => copyThemeVariables(frame);
    frame.removeEventListener('load', this.onLoad);
    this.onLoad = apply;
    frame.addEventListener('load', apply);
    apply();
  }

  private onLoad: () => void = () => undefined;
}

/** Lab's --jp-* custom properties, as declared by its style sheets. */
function themeVariables(): Set<string> {
  const names = new Set<string>();
  for (const sheet of Array.from(document.styleSheets)) {
    let rules: CSSRuleList;
    try {
      rules = sheet.cssRules;
    } catch {
      continue; // another origin's sheet
    }
    for (const rule of Array.from(rules)) {
      if (rule instanceof CSSStyleRule) {
        for (const name of Array.from(rule.style)) {
          if (name.startsWith('--jp-')) {
            names.add(name);
          }
        }
      }
    }
  }
  return names;
}

export function copyThemeVariables(frame: HTMLIFrameElement): void {
  let root: HTMLElement | undefined;
  try {
    root = frame.contentDocument?.documentElement;
  } catch {
    return; // not the same origin: nothing to theme
  }
  if (!root) {
    return;
  }
  const computed = getComputedStyle(document.body);
  for (const name of themeVariables()) {
    const value = computed.getPropertyValue(name).trim();
    if (value) {
      root.style.setProperty(name, value);
    }
  }
}
