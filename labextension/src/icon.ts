import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <circle class="jp-icon3" cx="12" cy="12" r="9" fill="none" stroke="#616161" stroke-width="2"/>
  <path class="jp-icon3" d="M12 6.5V12l3.5 2.5" fill="none" stroke="#616161" stroke-width="2"
    stroke-linecap="round"/>
</svg>`;

/** A clock: dkron-lab's launcher, tab and command icon. */
export const dkronIcon = new LabIcon({ name: 'dkron-lab:clock', svgstr: svg });
