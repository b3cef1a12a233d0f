import { describe, expect, it } from "vitest";

import { ThemeColor } from "vscode";
import { type StatusSummary, applyStatus, modeChoices, renderStatus } from "../src/status";

const gpu = (mode: string, residents: string[], hold: string | null = null) => ({
  name: "gpu0",
  kind: "gpu",
  mode,
  residents,
  hold,
});

const summary = (over: Partial<StatusSummary> = {}): StatusSummary => ({
  reachable: true,
  url: "http://127.0.0.1:8788",
  devices: [gpu("auto", ["architect-demo"]), { name: "cpu", kind: "cpu", mode: "auto", residents: ["operator-demo"], hold: null }],
  mode: "auto",
  resident: "architect-demo",
  tiers: ["architect", "builder"],
  text: "gpu0: auto · architect-demo",
  ...over,
});

describe("renderStatus", () => {
  it.each([
    ["auto with a resident", summary(), "$(server-process) auto · architect-demo", false],
    ["idle", summary({ resident: null, devices: [gpu("auto", [])] }), "$(server-process) auto", false],
    ["gaming", summary({ mode: "gaming", resident: null, devices: [gpu("gaming", [])] }), "$(game) gaming", false],
    ["pinned", summary({ mode: "builder", resident: "builder-demo" }), "$(server-process) builder · builder-demo", false],
    ["offline", summary({ reachable: false, devices: [], mode: null, resident: null, error: "refused" }), "$(debug-disconnect) Tierhost: offline", true],
  ])("%s", (_, input, text, warning) => {
    const rendered = renderStatus(input);
    expect(rendered.text).toBe(text);
    expect(rendered.warning).toBe(warning);
  });

  it("lists every GPU device and its hold in the tooltip, not the CPU", () => {
    const rendered = renderStatus(
      summary({ devices: [gpu("builder", ["builder-demo"], "gpu0 is pinned to builder")] }),
    );
    expect(rendered.tooltip).toContain("gpu0: builder — builder-demo (gpu0 is pinned to builder)");
    expect(rendered.tooltip).not.toContain("operator-demo");
  });

  it("shows a spinner before the first notification", () => {
    expect(renderStatus(undefined).text).toContain("sync~spin");
  });
});

describe("modeChoices", () => {
  it("offers auto, gaming and each GPU tier, marking the current mode", () => {
    const choices = modeChoices(summary({ mode: "gaming" }));
    expect(choices.map((c) => c.label)).toEqual(["auto", "gaming", "architect", "builder"]);
    expect(choices[1].description).toMatch(/^\(current\)/);
    expect(choices[2].description).toBe("pin the GPU to the architect tier");
  });

  it("has sensible choices before any status arrived", () => {
    expect(modeChoices(undefined).map((c) => c.label)).toEqual(["auto", "gaming", "architect", "builder"]);
  });
});

describe("applyStatus", () => {
  it("colours the item as a warning only when the daemon is offline", () => {
    const item = { text: "", tooltip: undefined, backgroundColor: undefined } as never as import("vscode").StatusBarItem;
    applyStatus(item, summary({ reachable: false }));
    expect(item.backgroundColor).toBeInstanceOf(ThemeColor);
    expect((item.backgroundColor as unknown as { id: string }).id).toBe("statusBarItem.warningBackground");
    applyStatus(item, summary());
    expect(item.backgroundColor).toBeUndefined();
    expect(item.text).toBe("$(server-process) auto · architect-demo");
  });
});
