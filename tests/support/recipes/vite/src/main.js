import './style.css';
import { message } from './message.js';

document.querySelector('#title').textContent = message;
