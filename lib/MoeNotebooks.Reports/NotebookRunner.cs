using System.Diagnostics;
using System.Reflection;
using System.Runtime.Loader;
using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Commands;
using Microsoft.DotNet.Interactive.CSharp;
using Microsoft.DotNet.Interactive.Documents;
using Microsoft.DotNet.Interactive.Documents.Jupyter;
using Microsoft.DotNet.Interactive.Events;
using Microsoft.DotNet.Interactive.PackageManagement;

namespace MoeNotebooks.Reports;

/// <summary>
/// Executes a Jupyter notebook's C# cells in order in a fresh in-process .NET Interactive kernel (C# with
/// <c>#r "nuget: ..."</c> and .NET Interactive kernel extensions such as Plotly.NET.Interactive's chart formatter),
/// with the working directory set to the notebook's folder.
/// </summary>
public static class NotebookRunner
{
    private const string CSharpKernelName = "csharp";
    private const string MarkdownKernelName = "markdown";

    // The working directory is process-wide, and so are the assemblies a notebook loads: one notebook at a time.
    private static readonly SemaphoreSlim OneAtATime = new(1, 1);

    private static readonly KernelInfoCollection KernelInfos =
    [
        new Microsoft.DotNet.Interactive.Documents.KernelInfo(CSharpKernelName, languageName: "C#", aliases: ["c#", "C#", "cs"]),
        new Microsoft.DotNet.Interactive.Documents.KernelInfo(MarkdownKernelName, languageName: "Markdown", aliases: ["md"]),
    ];

    /// <summary>Parses an .ipynb file into cells (kernel name, source) without running it.</summary>
    public static InteractiveDocument Parse(string notebookPath)
    {
        using var stream = File.OpenRead(notebookPath);
        return Notebook.Read(stream, KernelInfos);
    }

    /// <summary>Runs the notebook; a failing cell stops the run and is described in <see cref="ExecutedNotebook.Failure"/>.</summary>
    public static async Task<ExecutedNotebook> RunAsync(
        string notebookPath, Action<CellProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var fullPath = Path.GetFullPath(notebookPath);
        var document = Parse(fullPath);
        var elements = document.Elements.ToList();
        var codeCellCount = elements.Count(e => !IsMarkdown(e));

        await OneAtATime.WaitAsync(cancellationToken).ConfigureAwait(false);
        var previousDirectory = Environment.CurrentDirectory;
        var total = Stopwatch.StartNew();
        try
        {
            Environment.CurrentDirectory = Path.GetDirectoryName(fullPath)!;
            using var kernel = CreateKernel();
            var cells = new List<ExecutedCell>(elements.Count);
            NotebookFailure? failure = null;
            var codeNumber = 0;
            for (var i = 0; i < elements.Count; i++)
            {
                var element = elements[i];
                var number = i + 1;
                if (IsMarkdown(element))
                {
                    cells.Add(new ExecutedCell(number, null, MarkdownKernelName, element.Contents, [], TimeSpan.Zero, Executed: false));
                    continue;
                }

                codeNumber++;
                if (failure is not null)
                {
                    cells.Add(new ExecutedCell(number, codeNumber, element.KernelName ?? CSharpKernelName, element.Contents, [], TimeSpan.Zero, Executed: false));
                    continue;
                }

                progress?.Invoke(new CellProgress(fullPath, number, codeNumber, codeCellCount, Finished: false, total.Elapsed));
                var cell = await ExecuteCellAsync(kernel, element, number, codeNumber, cancellationToken).ConfigureAwait(false);
                cells.Add(cell);
                progress?.Invoke(new CellProgress(fullPath, number, codeNumber, codeCellCount, Finished: true, total.Elapsed));
                if (cell.Failed)
                {
                    var message = string.Join(Environment.NewLine, cell.Outputs
                        .Where(o => o.Kind == CellOutputKind.Error)
                        .Select(o => o.Values[CellOutput.PlainText]));
                    failure = new NotebookFailure(notebookPath, number, codeNumber, message);
                }
            }

            return new ExecutedNotebook(notebookPath, cells, total.Elapsed, failure);
        }
        finally
        {
            Environment.CurrentDirectory = previousDirectory;
            OneAtATime.Release();
        }
    }

    /// <summary>Like <see cref="RunAsync"/>, but throws <see cref="NotebookCellException"/> when a cell fails.</summary>
    public static async Task<ExecutedNotebook> RunOrThrowAsync(
        string notebookPath, Action<CellProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var result = await RunAsync(notebookPath, progress, cancellationToken).ConfigureAwait(false);
        return result.Failure is { } failure ? throw new NotebookCellException(failure, result) : result;
    }

    private static bool IsMarkdown(InteractiveDocumentElement element) =>
        string.Equals(element.KernelName, MarkdownKernelName, StringComparison.OrdinalIgnoreCase);

    private static async Task<ExecutedCell> ExecuteCellAsync(
        CompositeKernel kernel, InteractiveDocumentElement element, int number, int codeNumber, CancellationToken cancellationToken)
    {
        var kernelName = element.KernelName ?? CSharpKernelName;
        var watch = Stopwatch.StartNew();
        if (!string.Equals(kernelName, CSharpKernelName, StringComparison.OrdinalIgnoreCase))
        {
            return new ExecutedCell(number, codeNumber, kernelName, element.Contents,
                [CellOutput.Text(CellOutputKind.Error, $"Only C# cells can be executed; this cell's kernel is '{kernelName}'.")],
                watch.Elapsed, Executed: false);
        }

        var result = await kernel.SendAsync(new SubmitCode(element.Contents, CSharpKernelName), cancellationToken).ConfigureAwait(false);
        var outputs = new List<CellOutput>();
        foreach (var kernelEvent in result.Events)
        {
            switch (kernelEvent)
            {
                case StandardOutputValueProduced e:
                    outputs.Add(new CellOutput(CellOutputKind.StandardOutput, ToDictionary(e.FormattedValues)));
                    break;
                case StandardErrorValueProduced e:
                    outputs.Add(new CellOutput(CellOutputKind.StandardError, ToDictionary(e.FormattedValues)));
                    break;
                case ErrorProduced e:
                    outputs.Add(CellOutput.Text(CellOutputKind.Error, e.Message));
                    break;
                case DisplayedValueUpdated e:
                    var index = outputs.FindIndex(o => o.ValueId is not null && o.ValueId == e.ValueId);
                    var updated = new CellOutput(CellOutputKind.Display, ToDictionary(e.FormattedValues), e.ValueId);
                    if (index >= 0)
                    {
                        outputs[index] = updated;
                    }
                    else
                    {
                        outputs.Add(updated);
                    }

                    break;
                case DisplayEvent e: // DisplayedValueProduced, ReturnValueProduced
                    outputs.Add(new CellOutput(CellOutputKind.Display, ToDictionary(e.FormattedValues), e.ValueId));
                    break;
                case CommandFailed e:
                    outputs.Add(CellOutput.Text(CellOutputKind.Error, e.Exception?.ToString() is { } detail && !detail.Contains(e.Message, StringComparison.Ordinal)
                        ? $"{e.Message}{Environment.NewLine}{detail}"
                        : e.Message));
                    break;
            }
        }

        return new ExecutedCell(number, codeNumber, kernelName, element.Contents, outputs, watch.Elapsed, Executed: true);
    }

    private static Dictionary<string, string> ToDictionary(IReadOnlyCollection<Microsoft.DotNet.Interactive.Formatting.FormattedValue> values) =>
        values
            .GroupBy(v => v.MimeType, StringComparer.OrdinalIgnoreCase)
            .ToDictionary(g => g.Key, g => g.First().Value, StringComparer.OrdinalIgnoreCase);

    private static CompositeKernel CreateKernel()
    {
        var csharp = new CSharpKernel()
            .UseNugetDirective(OnPackagesResolvedAsync, forceRestore: false)
            .UseKernelHelpers()
            .UseValueSharing();
        var composite = new CompositeKernel { csharp };
        composite.DefaultKernelName = CSharpKernelName;
        return composite;
    }

    /// <summary>
    /// After <c>#r "nuget: ..."</c>: reference the package assemblies, then load the package's .NET Interactive
    /// extensions (<c>interactive-extensions/dotnet/*.dll</c> implementing <see cref="IKernelExtension"/>, or an
    /// <c>extension.dib</c>), as the dotnet-interactive tool does.
    /// </summary>
    private static async Task OnPackagesResolvedAsync(Kernel kernel, IReadOnlyList<ResolvedPackageReference> packages)
    {
        var csharp = (CSharpKernel)kernel;
        csharp.AddAssemblyReferences(packages.SelectMany(p => p.AssemblyPaths));
        var root = kernel.RootKernel;
        foreach (var package in packages)
        {
            var extensionDirectory = Path.Combine(package.PackageRoot, "interactive-extensions", "dotnet");
            if (!Directory.Exists(extensionDirectory))
            {
                continue;
            }

            foreach (var dll in Directory.GetFiles(extensionDirectory, "*.dll").Order(StringComparer.Ordinal))
            {
                var assembly = AssemblyLoadContext.Default.LoadFromAssemblyPath(dll);
                foreach (var type in ExtensionTypes(assembly))
                {
                    var extension = (IKernelExtension)Activator.CreateInstance(type)!;
                    await extension.OnLoadAsync(root).ConfigureAwait(false);
                }
            }

            var dib = Path.Combine(extensionDirectory, "extension.dib");
            if (File.Exists(dib))
            {
                await root.LoadAndRunInteractiveDocument(new FileInfo(dib)).ConfigureAwait(false);
            }
        }
    }

    private static IEnumerable<Type> ExtensionTypes(Assembly assembly) =>
        assembly.GetExportedTypes().Where(t =>
            t is { IsAbstract: false, IsInterface: false } &&
            typeof(IKernelExtension).IsAssignableFrom(t) &&
            t.GetConstructor(Type.EmptyTypes) is not null);
}
