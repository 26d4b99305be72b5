// The SharedWorker that holds the browser's one WebSocket for all tabs of one user
// (worker/hub.js does the work; worker/tabs.js is the tab's side). A module worker:
// `new SharedWorker(url, {type: "module", name: "chat-<user id>"})`. It has no
// `document`: REST calls, the CSRF token, notifications and the page's signals stay in
// the tabs; here is only the socket.

import { Hub } from "./hub.js";

const hub = new Hub();
let tabs = 0;

globalThis.onconnect = (event) => {
  const port = event.ports[0];
  const tab = ++tabs;
  hub.addTab(tab, (message) => port.postMessage(message));
  port.onmessage = (message) => hub.receive(tab, message.data);
  // Chromium tells a port's closing (its tab went away) where it can; "bye" covers the rest.
  port.addEventListener("close", () => hub.removeTab(tab));
  port.start();
};

globalThis.chatHub = hub; // for the worker's console
