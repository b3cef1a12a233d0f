import { describe, expect, it } from "vitest";

import { DEFAULTS, readSettings, serverLaunch, venvPython } from "../src/settings";

describe("readSettings", () => {
  it("falls back to the defaults for unset or blank values", () => {
    expect(readSettings(() => undefined)).toEqual(DEFAULTS);
    expect(readSettings(() => "   ")).toEqual(DEFAULTS);
  });

  it("trims values and the URL's trailing slash", () => {
    const values: Record<string, unknown> = {
      hostUrl: " http://gpu-box:8788/ ",
      token: "s3cret",
      pythonPath: "/opt/py/bin/python",
    };
    expect(readSettings((key) => values[key])).toEqual({
      hostUrl: "http://gpu-box:8788",
      token: "s3cret",
      pythonPath: "/opt/py/bin/python",
    });
  });
});

describe("serverLaunch", () => {
  const settings = { ...DEFAULTS };

  it.each([
    // [pythonPath, folder, venv exists, platform, expected command]
    ["", "/work/app", true, "linux", "/work/app/.venv/bin/python"],
    ["", "/work/app", false, "linux", "python3"],
    ["", undefined, true, "linux", "python3"],
    ["", "C:\\work\\app", true, "win32", "C:\\work\\app\\.venv\\Scripts\\python.exe"],
    ["", "C:\\work\\app", false, "win32", "python"],
    ["/usr/bin/python3.11", "/work/app", true, "linux", "/usr/bin/python3.11"],
  ] as const)("pythonPath %j in %j (venv %s, %s) → %s", (pythonPath, folder, exists, platform, expected) => {
    const launch = serverLaunch({ ...settings, pythonPath }, folder, () => exists, platform);
    expect(launch.command).toBe(expected);
    expect(launch.args).toEqual(["-m", "lsp", "--url", "http://127.0.0.1:8788"]);
  });

  it("passes the URL and the token in the environment, keeping the rest", () => {
    const launch = serverLaunch(
      { hostUrl: "http://box:9000", token: "t0k", pythonPath: "" },
      undefined,
      () => false,
      "linux",
      { PATH: "/usr/bin", UNSET: undefined },
    );
    expect(launch.env).toEqual({ PATH: "/usr/bin", TIERHOST_URL: "http://box:9000", TIERHOST_TOKEN: "t0k" });
  });

  it("sends no token when none is set", () => {
    const launch = serverLaunch(settings, undefined, () => false, "linux");
    expect(launch.env).not.toHaveProperty("TIERHOST_TOKEN");
  });

  it("finds the venv interpreter per platform", () => {
    expect(venvPython("/a", "darwin")).toBe("/a/.venv/bin/python");
    expect(venvPython("C:\\a", "win32")).toBe("C:\\a\\.venv\\Scripts\\python.exe");
  });
});
