// Message search: the results replace the conversation list; a result opens its
// conversation scrolled to the message.

import { api, query } from "../api.js";
import { h, snippetNodes } from "../dom.js";
import { inlineFormatted } from "../markup.js";
import * as fmt from "../format.js";
import { openConversation } from "./conversation.js";
import { problem, toast } from "./helpers.js";
import { $, client, nameOf, ui } from "./shared.js";

async function runSearch(q) {
  ui.searchResults.hidden = false;
  ui.conversations.hidden = true;
  ui.searchStatus.textContent = "Searching…";
  ui.searchList.replaceChildren();
  try {
    const page = await api(`/api/v1/search?${query({ q })}`);
    ui.searchStatus.textContent = page.results.length
      ? `${page.results.length}${page.next ? "+" : ""} result${page.results.length === 1 ? "" : "s"}`
      : "No messages match.";
    ui.searchList.replaceChildren(
      ...page.results.map(({ message, snippet }) => {
        const c = client.conversation(message.conversation);
        const date = fmt.toDate(message.created_at);
        return h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "result", "data-conversation": message.conversation, "data-message": message.id, onclick: () => openResult(message) },
            h(
              "span",
              { class: "result-top" },
              h("span", { class: "result-title", text: c?.title || "Conversation" }),
              date ? h("time", { datetime: message.created_at, text: fmt.listTime(message.created_at) }) : null,
            ),
            h("span", { class: "result-sender", text: nameOf(message.sender) }),
            h("span", { class: "result-snippet" }, snippetNodes(snippet, inlineFormatted)),
          ),
        );
      }),
    );
  } catch (error) {
    ui.searchStatus.textContent = problem(error);
  }
}

function closeSearch() {
  ui.searchResults.hidden = true;
  ui.conversations.hidden = false;
}

function openResult(message) {
  if (!client.active.has(message.conversation)) {
    toast("You are no longer in that conversation.");
    return;
  }
  openConversation(message.conversation, { reveal: message });
}

export function install() {
  ui.searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = ui.searchInput.value.trim();
    if (q) runSearch(q);
    else closeSearch();
  });
  ui.searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      ui.searchInput.value = "";
      closeSearch();
    }
  });
  $("close-search").addEventListener("click", () => {
    closeSearch();
    ui.searchInput.focus();
  });
}
