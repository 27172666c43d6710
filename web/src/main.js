import { html } from 'htm/preact';
import { render } from 'preact';
import { App } from './app.js';
import './styles.css';

render(html`<${App} />`, document.getElementById('app'));
