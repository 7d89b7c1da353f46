using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>
/// An output file written whole or not at all: rows go to a temporary file next to the target, which replaces the
/// target only on <see cref="Commit"/>; <see cref="Abandon"/> (error, SIGINT, SIGTERM) deletes it, so the target is
/// never left half-written. A target that exists and is not a regular file (a device such as /dev/null or /dev/full,
/// a pipe) is written directly, since it cannot be replaced. Every failure is one line naming the option and the path.
/// </summary>
public sealed class OutputFile : IDisposable
{
    private readonly string _option;
    private readonly string? _temp;
    private readonly FileStream _stream;
    private bool _done;

    private OutputFile(string option, string path, string? temp, FileStream stream)
    {
        _option = option;
        Path = path;
        _temp = temp;
        _stream = stream;
        Writer = new StreamWriter(stream, new System.Text.UTF8Encoding(false), 1 << 16);
    }

    public string Path { get; }
    public TextWriter Writer { get; }

    /// <summary>Checks the target and opens the temporary file; fails with one line if the target cannot be written.</summary>
    public static OutputFile Open(string option, string path)
    {
        string Fail(string why) => throw new OutputException($"{option} = {Cli.Shown(path)}: {why}");
        if (path.Length == 0 || path.Trim().Length == 0) Fail("must be a file path");
        if (path.IndexOf('\0') >= 0) Fail("contains a NUL character");
        string full;
        try { full = System.IO.Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { return Fail2(option, path, $"is not a valid path ({e.Message})"); }
        if (Directory.Exists(full)) Fail($"is a directory; give a file path such as {Cli.Shown(System.IO.Path.Combine(path, "results.csv"))}");
        var folder = System.IO.Path.GetDirectoryName(full) ?? "/";
        if (!Directory.Exists(folder))
        {
            // Walk up to the first thing that exists: a file there means the path runs below a file.
            var up = folder;
            while (up is not null && !Directory.Exists(up) && !File.Exists(up)) up = System.IO.Path.GetDirectoryName(up);
            if (up is not null && File.Exists(up)) Fail($"lies below {Cli.Shown(up)}, which is a file, not a folder");
            Fail($"folder {Cli.Shown(folder)} does not exist; create it first");
        }
        if (File.Exists(full))
        {
            // Devices and pipes cannot be replaced by a rename: write into them directly.
            FileStream? existing = null;
            try
            {
                existing = new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
                if (!existing.CanSeek || full.StartsWith("/dev/", StringComparison.Ordinal)) return new OutputFile(option, path, null, existing);
            }
            catch (UnauthorizedAccessException) { existing?.Dispose(); Fail("cannot be written (permission denied)"); }
            catch (IOException e) { existing?.Dispose(); Fail($"cannot be written ({OneLine(e.Message)})"); }
            existing?.Dispose();
        }
        var temp = System.IO.Path.Combine(folder, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            return new OutputFile(option, path, temp, new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16));
        }
        catch (UnauthorizedAccessException) { return Fail2(option, path, $"cannot write in folder {Cli.Shown(folder)} (permission denied)"); }
        catch (IOException e) { return Fail2(option, path, $"cannot write in folder {Cli.Shown(folder)} ({OneLine(e.Message)})"); }
    }

    private static OutputFile Fail2(string option, string path, string why) => throw new OutputException($"{option} = {Cli.Shown(path)}: {why}");

    private static string OneLine(string s) => ConfigException.Visible(s, 200);

    /// <summary>The error for a write that failed (disk full, device error), after abandoning the temporary file.</summary>
    public OutputException WriteFailed(IOException e)
    {
        Abandon();
        return new OutputException($"{_option} = {Cli.Shown(Path)}: cannot write ({OneLine(e.Message)}); nothing was kept");
    }

    /// <summary>Flushes and moves the temporary file onto the target.</summary>
    public void Commit()
    {
        try
        {
            Writer.Flush();
            _stream.Flush(flushToDisk: false);
            Writer.Dispose();
            if (_temp is not null) File.Move(_temp, Path, overwrite: true);
            _done = true;
        }
        catch (IOException e) { throw WriteFailed(e); }
        catch (UnauthorizedAccessException) { Abandon(); throw new OutputException($"{_option} = {Cli.Shown(Path)}: cannot be replaced (permission denied); nothing was kept"); }
    }

    /// <summary>Deletes the temporary file; the target keeps whatever it held before (or stays absent).</summary>
    public void Abandon()
    {
        if (_done) return;
        _done = true;
        try { Writer.Dispose(); } catch (IOException) { } catch (ObjectDisposedException) { }
        try { _stream.Dispose(); } catch (IOException) { }
        if (_temp is not null) try { File.Delete(_temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public void Dispose() => Abandon();
}
