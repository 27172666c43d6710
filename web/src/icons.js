// Inline SVG icons: they render the same everywhere (no emoji font needed) and inherit the text colour.
import { html } from 'htm/preact';

const svg = (path, size = 18) => html`<svg class="icon" width=${size} height=${size} viewBox="0 0 24 24" fill="none"
  stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">${path}</svg>`;

export const Paperclip = ({ size }) =>
  svg(html`<path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48" />`, size);

export const Clock = ({ size = 12 }) => svg(html`<circle cx="12" cy="12" r="9" /><path d="M12 7v5l3 2" />`, size);
