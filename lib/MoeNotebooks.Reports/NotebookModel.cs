namespace MoeNotebooks.Reports;

/// <summary>What a cell produced.</summary>
public enum CellOutputKind
{
    /// <summary>A value shown with display() or as the cell's last expression.</summary>
    Display,
    /// <summary>Console output.</summary>
    StandardOutput,
    /// <summary>Console error output.</summary>
    StandardError,
    /// <summary>The cell failed; <see cref="CellOutput.Values"/> holds the message as text/plain.</summary>
    Error,
}

/// <summary>One output of a cell: the same value in one or more mime types (e.g. text/html and text/plain).</summary>
public sealed record CellOutput(CellOutputKind Kind, IReadOnlyDictionary<string, string> Values, string? ValueId = null)
{
    public const string Html = "text/html";
    public const string PlainText = "text/plain";

    /// <summary>A text/plain output.</summary>
    public static CellOutput Text(CellOutputKind kind, string text) =>
        new(kind, new Dictionary<string, string> { [PlainText] = text });
}

/// <summary>
/// One notebook cell after execution. <see cref="Number"/> is 1-based over ALL cells (markdown included), as a reader
/// counts them in the editor; <see cref="CodeCellNumber"/> is 1-based over code cells only (null for markdown).
/// </summary>
public sealed record ExecutedCell(
    int Number,
    int? CodeCellNumber,
    string KernelName,
    string Source,
    IReadOnlyList<CellOutput> Outputs,
    TimeSpan Duration,
    bool Executed)
{
    public bool IsMarkdown => CodeCellNumber is null;

    public bool Failed => Outputs.Any(o => o.Kind == CellOutputKind.Error);
}

/// <summary>
/// The failure that stopped a notebook run. <see cref="CellNumber"/> 0 means the notebook could not be run at all
/// (e.g. unreadable .ipynb), not that a cell failed.
/// </summary>
public sealed record NotebookFailure(string NotebookPath, int CellNumber, int CodeCellNumber, string Message)
{
    /// <summary>One line: notebook, cell (counting all cells, and counting code cells) and the first line of the error.</summary>
    public override string ToString()
    {
        var firstLine = Message.Split('\n', 2)[0].TrimEnd('\r');
        return CellNumber == 0
            ? $"{NotebookPath}: could not be run: {firstLine}"
            : $"{NotebookPath}: cell {CellNumber} (code cell {CodeCellNumber}) failed: {firstLine}";
    }
}

/// <summary>A notebook run: every cell up to and including the failing one (later cells are listed, not executed).</summary>
public sealed record ExecutedNotebook(string Path, IReadOnlyList<ExecutedCell> Cells, TimeSpan Duration, NotebookFailure? Failure)
{
    public bool Succeeded => Failure is null;

    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);
}

/// <summary>Thrown by <see cref="NotebookRunner.RunOrThrowAsync"/> when a cell fails.</summary>
public sealed class NotebookCellException(NotebookFailure failure, ExecutedNotebook notebook) : Exception(failure.ToString())
{
    public NotebookFailure Failure { get; } = failure;

    public ExecutedNotebook Notebook { get; } = notebook;

    public string NotebookPath => Failure.NotebookPath;

    public int CellNumber => Failure.CellNumber;

    public int CodeCellNumber => Failure.CodeCellNumber;
}

/// <summary>Progress of a run, reported before each code cell executes and after it finishes.</summary>
public sealed record CellProgress(string NotebookPath, int CellNumber, int CodeCellNumber, int CodeCellCount, bool Finished, TimeSpan Elapsed);
