using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// The canonical setup cells (notebooks/README.md) work whatever folder the host starts the kernel in, and say clearly
/// what is missing when they cannot. Each test copies them into a notebook in a temporary folder OUTSIDE the
/// repository (the runner makes a notebook's folder the working directory, as a host that does not start in the
/// repository would), so the relative <c>#r "../.build/..."</c> paths only resolve if cell 1 moved the working
/// directory to &lt;repo&gt;/notebooks. Oracle: the cell's documented contract (README) and the run's outcome.
/// </summary>
public sealed class SetupCellTests(ITestOutputHelper output)
{
    private static string NotebookOutsideTheRepository()
    {
        var (build, load) = NotebookFormatTests.CanonicalSetupCells();
        var folder = Directory.CreateTempSubdirectory("moe-setup-cell-").FullName;
        var path = Path.Combine(folder, "outside.ipynb");
        File.WriteAllText(path, NotebookJson.Code(build, load, "Console.WriteLine(Environment.CurrentDirectory); Console.WriteLine(typeof(Charts).Assembly.Location);"));
        return path;
    }

    private static async Task<ExecutedNotebook> RunWith(string notebook, params (string Name, string? Value)[] environment)
    {
        var saved = environment.Select(e => (e.Name, Value: Environment.GetEnvironmentVariable(e.Name))).ToList();
        try
        {
            foreach (var (name, value) in environment)
            {
                Environment.SetEnvironmentVariable(name, value);
            }

            return await NotebookRunner.RunAsync(notebook);
        }
        finally
        {
            foreach (var (name, value) in saved)
            {
                Environment.SetEnvironmentVariable(name, value);
            }
        }
    }

    [Fact]
    public async Task Outside_the_repository_the_setup_finds_it_through_MOENOTEBOOKS_ROOT_and_loads_the_helpers()
    {
        var result = await RunWith(NotebookOutsideTheRepository(), ("MOENOTEBOOKS_ROOT", RepoPaths.Root));
        Assert.True(result.Succeeded, result.Failure?.ToString());
        var stdout = string.Join("\n", result.Cells.SelectMany(c => c.Outputs).Where(o => o.Kind == CellOutputKind.StandardOutput).Select(o => o.Values[CellOutput.PlainText]));
        output.WriteLine(stdout);
        Assert.Contains(Path.Combine(RepoPaths.Root, "notebooks"), stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Outside_the_repository_without_MOENOTEBOOKS_ROOT_cell_1_says_what_to_do()
    {
        var result = await RunWith(NotebookOutsideTheRepository(), ("MOENOTEBOOKS_ROOT", null));
        var failure = Assert.IsType<NotebookFailure>(result.Failure);
        output.WriteLine(failure.ToString());
        Assert.Equal(1, failure.CodeCellNumber);
        Assert.Contains("MoeNotebooks.sln is not above the kernel's working directory", failure.Message, StringComparison.Ordinal);
        Assert.Contains("set MOENOTEBOOKS_ROOT", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task With_the_runtime_but_no_SDK_cell_1_names_the_missing_SDK()
    {
        // A kernel needs only the .NET runtime; the build needs the SDK. Stand-in for a runtime-only dotnet: a script
        // that prints what the dotnet muxer prints when no SDK is installed and exits 145 as it does (oracle: that
        // message, https://aka.ms/dotnet/download), reached through DOTNET_HOST_PATH, which the cell prefers.
        var fake = Path.Combine(Directory.CreateTempSubdirectory("moe-no-sdk-").FullName, "dotnet");
        File.WriteAllText(fake, """
            #!/bin/sh
            echo "The command could not be loaded, possibly because:" >&2
            echo "  * You intended to execute a .NET SDK command:" >&2
            echo "      No .NET SDKs were found." >&2
            exit 145
            """.Replace("\r\n", "\n", StringComparison.Ordinal));
        File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var result = await RunWith(NotebookOutsideTheRepository(), ("MOENOTEBOOKS_ROOT", RepoPaths.Root), ("DOTNET_HOST_PATH", fake));
        var failure = Assert.IsType<NotebookFailure>(result.Failure);
        output.WriteLine(failure.ToString());
        Assert.Equal(1, failure.CodeCellNumber);
        Assert.Contains("No usable .NET SDK: the notebooks build their helpers with the .NET 10 SDK", failure.Message, StringComparison.Ordinal);
    }
}
