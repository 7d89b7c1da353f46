namespace MoeNotebooks.Costs;

/// <summary>
/// Where the public calibration measurements live: <c>$MOE_CALIBRATION_DIR</c> when set, else
/// <c>&lt;repo root&gt;/data/calibration</c> (the published tables carried in the repository with their sources, see its
/// README), else <c>&lt;repo root&gt;/../shared/calibration</c>; the repo root is the first folder upward holding
/// <c>MoeNotebooks.sln</c> (searched from the current directory, then from this assembly's folder).
/// </summary>
public static class CalibrationData
{
    public const string EnvironmentVariable = "MOE_CALIBRATION_DIR";

    /// <summary>The prefix that scenario files use for paths inside this folder, e.g. <c>"$calibration/gemm_measured_public.csv"</c>.</summary>
    public const string PathPrefix = "$calibration/";

    /// <summary>The folder, or null when it cannot be found (see <see cref="WhyMissing"/>).</summary>
    public static string? Locate()
    {
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env)) return Directory.Exists(env) ? Path.GetFullPath(env) : null;
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            if (RepositoryRoot(start) is { } root)
            {
                foreach (var dir in new[] { Path.Combine(root, "data", "calibration"), Path.Combine(root, "..", "shared", "calibration") })
                    if (Directory.Exists(dir)) return Path.GetFullPath(dir);
            }
        }
        return null;
    }

    /// <summary>One line saying where the folder was looked for, for skip messages.</summary>
    public static string WhyMissing()
    {
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env)) return $"calibration data not found: {EnvironmentVariable}={env} is not a folder";
        var root = RepositoryRoot(Directory.GetCurrentDirectory()) ?? RepositoryRoot(AppContext.BaseDirectory);
        return root is null
            ? $"calibration data not found: no MoeNotebooks.sln above {Directory.GetCurrentDirectory()}; set {EnvironmentVariable}"
            : $"calibration data not found: neither {Path.GetFullPath(Path.Combine(root, "data", "calibration"))} nor {Path.GetFullPath(Path.Combine(root, "..", "shared", "calibration"))} exists; set {EnvironmentVariable} to a folder holding gemm_measured_public.csv, comm_measured_public.csv, training_measured_public.csv";
    }

    /// <summary>The first folder at or above <paramref name="start"/> holding MoeNotebooks.sln, or null.</summary>
    public static string? RepositoryRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
        return null;
    }

    /// <summary>
    /// Resolves a path written in a description: <c>$calibration/...</c> inside <see cref="Locate"/>'s folder, a relative
    /// path against the folder of the file that wrote it (<paramref name="source"/>), else as given.
    /// </summary>
    public static string Resolve(string path, string? source, string field)
    {
        if (path.StartsWith(PathPrefix, StringComparison.Ordinal))
        {
            var dir = Locate() ?? throw new Config.ConfigException(field, $"\"{path}\"", WhyMissing(), source);
            return Path.Combine(dir, path[PathPrefix.Length..]);
        }
        if (Path.IsPathRooted(path) || source is null) return path;
        var baseDir = Path.GetDirectoryName(Path.GetFullPath(source));
        return baseDir is null ? path : Path.Combine(baseDir, path);
    }
}
