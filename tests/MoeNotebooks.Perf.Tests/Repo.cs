using MoeNotebooks.Config;

namespace MoeNotebooks.Perf.Tests;

internal static class Repo
{
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException("MoeNotebooks.sln not found above the test binaries");
        }
    }

    public static readonly string[] Founding = ["seed-ep16", "seed-tp8-pp2", "ep16", "tp8-pp2"];

    public static string ScenarioPath(string name) => Path.Combine(Root, "data", "scenarios", name + ".json");

    public static Scenario Scenario(string name) => Config.Scenario.Load(ScenarioPath(name));
}
