using System.Collections.Concurrent;
using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Each notebook under notebooks/ is executed once per test run and shared by the tests that inspect it
/// (running a notebook costs tens of seconds; its outputs do not depend on which test asks).
/// </summary>
internal static class ExecutedNotebooks
{
    private static readonly ConcurrentDictionary<string, Lazy<Task<ExecutedNotebook>>> Runs = new(StringComparer.Ordinal);

    public static Task<ExecutedNotebook> Get(string name, Action<CellProgress>? progress = null) =>
        Runs.GetOrAdd(name, n => new Lazy<Task<ExecutedNotebook>>(() => NotebookRunner.RunAsync(Path.Combine(RepoPaths.Notebooks, n), progress))).Value;
}
