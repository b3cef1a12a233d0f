/**
 * The status bar item: the GPU mode and the resident model, from the bridge's
 * `tierhost/status` notification, and the quick pick that changes the mode.
 */
import * as vscode from "vscode";

export interface DeviceStatus {
  name: string;
  kind: string;
  mode: string;
  residents: string[];
  hold: string | null;
}

/** The `tierhost/status` notification's payload (see lsp/status.py). */
export interface StatusSummary {
  reachable: boolean;
  url: string;
  devices: DeviceStatus[];
  mode: string | null;
  resident: string | null;
  tiers?: string[];
  text: string;
  error?: string;
}

export interface Rendered {
  text: string;
  tooltip: string;
  warning: boolean;
}

export const STATUS_NOTIFICATION = "tierhost/status";

/** What the status bar shows for a summary (or before the first one arrives). */
export function renderStatus(summary: StatusSummary | undefined): Rendered {
  if (summary === undefined) {
    return { text: "$(sync~spin) Tierhost", tooltip: "Tierhost: connecting to the bridge…", warning: false };
  }
  if (!summary.reachable) {
    return {
      text: "$(debug-disconnect) Tierhost: offline",
      tooltip: `No Tierhost daemon answers at ${summary.url}${summary.error ? `\n${summary.error}` : ""}`,
      warning: true,
    };
  }
  const gpus = summary.devices.filter((d) => d.kind !== "cpu");
  const lines = gpus.map(
    (d) => `${d.name}: ${d.mode} — ${d.residents.length ? d.residents.join(", ") : "nothing resident"}` +
      (d.hold ? ` (${d.hold})` : ""),
  );
  const mode = summary.mode ?? "no GPU";
  const icon = mode === "gaming" ? "$(game)" : "$(server-process)";
  const resident = summary.resident ? ` · ${summary.resident}` : "";
  return {
    text: `${icon} ${mode}${resident}`,
    tooltip: [`Tierhost at ${summary.url}`, ...lines, "Click to change the GPU mode"].join("\n"),
    warning: false,
  };
}

/** Modes offered in the quick pick: auto, gaming, then each GPU tier; current first-marked. */
export function modeChoices(summary: StatusSummary | undefined): { label: string; description: string }[] {
  const tiers = summary?.tiers?.length ? summary.tiers : ["architect", "builder"];
  const modes = ["auto", "gaming", ...tiers.filter((t) => t !== "auto" && t !== "gaming")];
  const descriptions: Record<string, string> = {
    auto: "swap models by queue",
    gaming: "release the GPU; nothing loads unless forced",
  };
  return modes.map((mode) => ({
    label: mode,
    description:
      (mode === summary?.mode ? "(current) " : "") + (descriptions[mode] ?? `pin the GPU to the ${mode} tier`),
  }));
}

/** Shows `summary` on the item (text, tooltip, warning colour when offline). */
export function applyStatus(item: vscode.StatusBarItem, summary: StatusSummary | undefined): void {
  const rendered = renderStatus(summary);
  item.text = rendered.text;
  item.tooltip = rendered.tooltip;
  item.backgroundColor = rendered.warning ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
}
