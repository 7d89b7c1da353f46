using MoeNotebooks.Costs;

namespace MoeNotebooks.Config;

public enum CostModelKind
{
    /// <summary>max(2mkn / peak, (mk + kn + mn) x bytes / HBM bandwidth); communication latency + bytes / bandwidth.</summary>
    RooflineIdeal,

    /// <summary>Roofline with efficiencies read from an <see cref="EfficiencyTable"/>.</summary>
    RooflineEfficiency,

    /// <summary>Tile and wave quantization over the GPU's SMs (<see cref="TileWaveCompute"/>), datasheet links; nothing fitted.</summary>
    TileWave,

    /// <summary>GEMMs and collectives fitted to measured timings (<see cref="CalibratedCompute"/>, <see cref="CalibratedCommunication"/>).</summary>
    Calibrated,
}

/// <summary>What the calibrated cost model was fitted to: measurement files, already read and filtered.</summary>
/// <param name="GemmPath">The GEMM CSV as written in the description (null: GEMMs priced by the tile-wave model).</param>
/// <param name="Gpu">The value of the CSV's gpu column that was kept.</param>
/// <param name="CommunicationPath">The collectives CSV as written (null: datasheet links).</param>
/// <param name="System">The value of the CSV's system column that was kept.</param>
/// <param name="Neighbors">Measured shapes whose residuals correct each GEMM prediction (0: none).</param>
public sealed record CalibrationSpec(
    string? GemmPath,
    string? Gpu,
    IReadOnlyList<GemmMeasurement> Gemm,
    string? CommunicationPath,
    string? System,
    IReadOnlyList<CollectiveMeasurement> Communication,
    int Neighbors = 8);

/// <summary>Which cost model prices a scenario's DAG.</summary>
public sealed record CostModelSpec(CostModelKind Kind, EfficiencyTable? Efficiency = null)
{
    public static CostModelSpec Ideal { get; } = new(CostModelKind.RooflineIdeal);

    /// <summary>Tile table for kinds tile-wave and calibrated (null: the table of the GPU's architecture).</summary>
    public TileWaveTable? Tiles { get; init; }

    /// <summary>The measurements of kind calibrated.</summary>
    public CalibrationSpec? Calibration { get; init; }

    /// <summary>How expert-parallel all-to-alls are carried out (<c>"alltoall"</c>: nccl | pxn | deep-ep-normal | deep-ep-low-latency; default nccl).</summary>
    public AllToAllImplementation AllToAll { get; init; }

    /// <summary>
    /// SMs DeepEP's normal kernels run on (<c>"deepEpSms"</c>, only with <c>"alltoall": "deep-ep-normal"</c>): while a
    /// dispatch or combine runs, compute on that GPU keeps (SMs - deepEpSms) / SMs of its throughput. Default 20:
    /// Megatron-Core's <c>--moe-deepep-num-sms</c> default (Megatron-LM MoE docs: "Tune the SM count allocated to
    /// DeepEP communication kernels (default 20)"); DeepEP's README tests its normal kernels with 20-24 of an H800's
    /// 132 SMs. The low-latency kernels take no SMs while they wait (their receive is a hook), so they take none here.
    /// </summary>
    public int DeepEpSms { get; init; } = DefaultDeepEpSms;

    public const int DefaultDeepEpSms = 20;

    /// <summary>
    /// <c>"groupedGemm": true</c> (kind tile-wave): each EP rank's routed-expert GEMMs are priced as one grouped GEMM
    /// (Megatron-Core's <c>--moe-grouped-gemm</c>, Transformer Engine GroupedLinear): per-expert tiles, waves shared
    /// across the experts, one launch (<see cref="TileWaveCompute.GroupedMatmulSeconds"/>). Default false: one kernel
    /// per expert, as before (the sequential expert loop Megatron runs without the flag).
    /// </summary>
    public bool GroupedGemm { get; init; }

    /// <summary>
    /// <c>"fusedAttention": true</c> (kind tile-wave): each rank's attention score and value products (and their
    /// gradients) are priced per head as its share of one fused attention kernel over the rank's heads, as
    /// FlashAttention / cuDNN fused attention run them (one grid over sequences x heads x query blocks, the scores kept
    /// on chip: <see cref="TileWaveCompute.FusedAttentionSeconds"/>). Applies to DAGs built with the fused attention
    /// kernel (<c>strategy.attentionKernel</c> "fused", the default). Default false: one kernel per head whose scores
    /// stream through HBM, as before.
    /// </summary>
    public bool FusedAttention { get; init; }

    /// <summary>
    /// <c>"ncclProtocols": true</c> (or a table name such as <c>"nccl-2.28"</c>): all-reduce, reduce-scatter and
    /// all-gather are priced per NCCL algorithm and protocol (LL / LL128 / Simple) with NCCL's tuner tables
    /// (<see cref="NcclTuning"/>, <c>data/collectives/</c>), the fastest chosen and reported. Default null: one latency
    /// per step from the hardware description, as before (the founding scenarios keep their totals).
    /// </summary>
    public NcclTuning? NcclProtocols { get; init; }

    /// <summary>
    /// <c>"nvlinkContention": true</c>: NVLink ports contend in the scheduler as NICs do (<see cref="LinkCommunication.NvlinkContention"/>):
    /// a pipeline send inside a node runs beside a collective on the sender's or receiver's NVLink port and the two
    /// share it. Default false (the founding scenarios keep their totals; a GPU's collectives already queue on its
    /// communication stream, so only sends meet collectives or each other on a port).
    /// </summary>
    public bool NvlinkContention { get; init; }

    /// <summary>
    /// A cost model by a single name, as a notebook parameter gives it: a kind that needs no options
    /// ("roofline-ideal", "tile-wave") or the name of an efficiency table in data/efficiency ("typical-hopper").
    /// </summary>
    public static CostModelSpec Named(string name, string field = "costModel", string? source = null)
    {
        if (name.Length > 0 && !name.Equals("roofline-ideal", StringComparison.OrdinalIgnoreCase) && !name.Equals("tile-wave", StringComparison.OrdinalIgnoreCase))
            return new CostModelSpec(CostModelKind.RooflineEfficiency, EfficiencyTable.Get(name, field, source));
        using var doc = System.Text.Json.JsonDocument.Parse(System.Text.Json.JsonSerializer.Serialize(name));
        return Read(doc.RootElement, field, source);
    }

    /// <summary>
    /// What <see cref="Create"/>'s communication model is made of besides the hardware: specs with the same key (on
    /// the same hardware) price every collective and send alike, whatever their compute side (roofline or tile-wave,
    /// grouped GEMMs, fused attention). A calibrated spec keys on its measurements (compared by reference).
    /// </summary>
    internal CommunicationKey Communication => new(AllToAll, NcclProtocols, NvlinkContention, Kind == CostModelKind.Calibrated ? Calibration : null);

    public CostModel Create(HardwareSpec hardware)
    {
        var model = CreateModel(hardware);
        if (GroupedGemm) model = new CostModel(model.Name + ", grouped expert GEMMs", model.Compute, model.Communication) { GroupedExpertGemms = true };
        if (FusedAttention) model = new CostModel(model.Name + ", fused attention", model.Compute, model.Communication) { GroupedExpertGemms = model.GroupedExpertGemms, FusedAttentionHeads = true };
        if (AllToAll != AllToAllImplementation.DeepEpNormal) return model;
        var sms = hardware.Gpu.SmCount ?? throw new ConfigException("hardware.gpu.smCount", null,
            $"is required by costModel.alltoall \"deep-ep-normal\" (its kernels take costModel.deepEpSms = {DeepEpSms} of the GPU's SMs; GPU \"{hardware.Gpu.Name}\" lists no SM count)");
        if (DeepEpSms >= sms)
            throw new ConfigException("costModel.deepEpSms", DeepEpSms.ToString(System.Globalization.CultureInfo.InvariantCulture), $"must be less than the GPU's {sms} SMs (hardware.gpu.smCount)");
        return new CostModel(model.Name, model.Compute, model.Communication) { AllToAllSmShare = (double)DeepEpSms / sms, GroupedExpertGemms = model.GroupedExpertGemms, FusedAttentionHeads = model.FusedAttentionHeads };
    }

    private CostModel CreateModel(HardwareSpec hardware)
    {
        // DeepEP's low-latency kernels pay their measured fixed cost (the normal kernels' de-duplication needs no table).
        var links = new LinkCommunication(hardware, AllToAll, NcclProtocols)
        {
            NvlinkContention = NvlinkContention,
            DeepEp = AllToAll == AllToAllImplementation.DeepEpLowLatency ? DeepEpKernels.Default : null,
            // Datasheet links at line rate in the ideal model, as its compute is at peak.
            LineRate = Kind == CostModelKind.RooflineIdeal,
        };
        switch (Kind)
        {
            case CostModelKind.RooflineIdeal:
                return new CostModel("roofline-ideal", new RooflineCompute(hardware.Gpu, EfficiencyTable.Ideal), links);
            case CostModelKind.RooflineEfficiency:
            {
                var table = Efficiency ?? throw new ConfigException("costModel.efficiency", null, "is required for kind \"roofline-efficiency\"");
                return new CostModel($"roofline-efficiency({table.Name})", new RooflineCompute(hardware.Gpu, table), links);
            }
            case CostModelKind.TileWave:
            {
                var tiles = Tiles ?? TileWaveTable.For(hardware.Gpu);
                return new CostModel($"tile-wave({tiles.Name})", new TileWaveCompute(hardware.Gpu, tiles), links);
            }
            default:
            {
                var c = Calibration ?? throw new ConfigException("costModel.gemm", null, "kind \"calibrated\" needs \"gemm\" and/or \"communication\" measurement files");
                var tiles = Tiles ?? TileWaveTable.For(hardware.Gpu);
                IComputeCostModel compute = c.Gemm.Count > 0
                    ? new CalibratedCompute(hardware.Gpu, tiles, c.Gemm, c.Neighbors, c.GemmPath ?? "gemm")
                    : new TileWaveCompute(hardware.Gpu, tiles);
                ICommunicationCostModel communication = c.Communication.Count > 0
                    ? CalibratedCommunication.FromMeasurements(hardware, c.Communication, c.CommunicationPath ?? "communication", allToAll: AllToAll)
                    : links;
                return new CostModel($"calibrated({compute.Name}, {communication.Name})", compute, communication);
            }
        }
    }

    /// <summary>
    /// <c>"roofline-ideal"</c> or <c>"tile-wave"</c>; or an object:
    /// <c>{"kind": "roofline-efficiency", "efficiency": "typical-hopper" | {...table...}}</c>,
    /// <c>{"kind": "tile-wave", "tiles": "hopper" | {...table...}}</c>,
    /// <c>{"kind": "calibrated", "gemm": "$calibration/gemm_measured_public.csv", "gpu": "H100-80GB",
    /// "communication": "...csv", "system": "DGX H100 (vidur h100_dgx)", "neighbors": 8, "tiles": ...}</c>.
    /// Relative paths are relative to the scenario file; <c>$calibration/</c> is the shared calibration folder.
    /// </summary>
    public static CostModelSpec Read(System.Text.Json.JsonElement element, string path, string? source)
    {
        if (element.ValueKind == System.Text.Json.JsonValueKind.String)
            return Checked(new CostModelSpec(JsonObjectReader.ParseEnum<CostModelKind>(path, element.GetString()!, source)), path, source);
        var r = new JsonObjectReader(element, path, source);
        var kind = JsonObjectReader.ParseEnum<CostModelKind>(r.Child("kind"), r.String("kind"), source);
        EfficiencyTable? table = null;
        if (r.Element("efficiency") is { } eff)
        {
            table = eff.ValueKind == System.Text.Json.JsonValueKind.String
                ? EfficiencyTable.Get(eff.GetString()!, r.Child("efficiency"), source)
                : EfficiencyTable.Read(new JsonObjectReader(eff, r.Child("efficiency"), source));
        }
        TileWaveTable? tiles = null;
        if (r.Element("tiles") is { } t)
        {
            tiles = t.ValueKind == System.Text.Json.JsonValueKind.String
                ? TileWaveTable.Get(t.GetString()!, r.Child("tiles"), source)
                : TileWaveTable.Read(new JsonObjectReader(t, r.Child("tiles"), source));
        }
        var gemmPath = r.OptionalString("gemm");
        var gpu = r.OptionalString("gpu");
        var commPath = r.OptionalString("communication");
        var system = r.OptionalString("system");
        var neighbors = r.OptionalInt("neighbors");
        var allToAll = r.OptionalString("alltoall") is { } a ? JsonObjectReader.ParseEnum<AllToAllImplementation>(r.Child("alltoall"), a, source) : AllToAllImplementation.Nccl;
        var deepEpSms = r.OptionalInt("deepEpSms");
        var groupedGemm = r.OptionalBool("groupedGemm") ?? false;
        var fusedAttention = r.OptionalBool("fusedAttention") ?? false;
        var nvlinkContention = r.OptionalBool("nvlinkContention") ?? false;
        NcclTuning? protocols = null;
        if (r.Element("ncclProtocols") is { } np)
        {
            protocols = np.ValueKind switch
            {
                System.Text.Json.JsonValueKind.True => NcclTuning.Default,
                System.Text.Json.JsonValueKind.False => null,
                System.Text.Json.JsonValueKind.String => NcclTuning.Get(np.GetString()!, r.Child("ncclProtocols"), source),
                _ => throw new ConfigException(r.Child("ncclProtocols"), JsonObjectReader.Raw(np), "must be true, false or the name of an NCCL tuning table (\"nccl-2.28\")", source),
            };
        }
        r.Finish();
        if (deepEpSms is { } dsms)
        {
            if (allToAll != AllToAllImplementation.DeepEpNormal)
                throw new ConfigException(r.Child("deepEpSms"), dsms.ToString(System.Globalization.CultureInfo.InvariantCulture), $"applies only to \"alltoall\": \"deep-ep-normal\" (the kernels that run on SMs), not \"{JsonObjectReader.Kebab(allToAll.ToString())}\"", source);
            if (dsms is < 1 or > 1024)
                throw new ConfigException(r.Child("deepEpSms"), dsms.ToString(System.Globalization.CultureInfo.InvariantCulture), "must be an SM count from 1 to 1024 (and less than the GPU's SMs)", source);
        }

        void OnlyFor(CostModelKind k, string key, string? shown, params CostModelKind[] also)
        {
            if (shown is not null && kind != k && !also.Contains(kind))
                throw new ConfigException(r.Child(key), shown, $"applies only to kind \"{JsonObjectReader.Kebab(k.ToString())}\"{string.Concat(also.Select(a => $" or \"{JsonObjectReader.Kebab(a.ToString())}\""))}, not \"{JsonObjectReader.Kebab(kind.ToString())}\"", source);
        }
        static string? Q(string? s) => s is null ? null : $"\"{s}\"";
        OnlyFor(CostModelKind.TileWave, "tiles", Q(tiles?.Name), CostModelKind.Calibrated);
        OnlyFor(CostModelKind.TileWave, "groupedGemm", groupedGemm ? "true" : null);
        OnlyFor(CostModelKind.TileWave, "fusedAttention", fusedAttention ? "true" : null);
        OnlyFor(CostModelKind.Calibrated, "gemm", Q(gemmPath));
        OnlyFor(CostModelKind.Calibrated, "gpu", Q(gpu));
        OnlyFor(CostModelKind.Calibrated, "communication", Q(commPath));
        OnlyFor(CostModelKind.Calibrated, "system", Q(system));
        OnlyFor(CostModelKind.Calibrated, "neighbors", neighbors?.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (nvlinkContention && kind == CostModelKind.Calibrated && commPath is not null)
            throw new ConfigException(r.Child("nvlinkContention"), "true", "applies to the link model (kinds roofline-ideal, roofline-efficiency, tile-wave, or calibrated without \"communication\"), not to a calibrated communication fit", source);

        CalibrationSpec? calibration = null;
        if (kind == CostModelKind.Calibrated)
        {
            if (gemmPath is null && commPath is null)
                throw new ConfigException(r.Child("gemm"), null, "kind \"calibrated\" needs \"gemm\" (a GEMM timing CSV) and/or \"communication\" (a collective timing CSV)", source);
            if (neighbors is < 0) throw new ConfigException(r.Child("neighbors"), neighbors.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), "must be >= 0 (0 turns the residual correction off)", source);
            if (neighbors is { } nb) Validate.Within(r.Child("neighbors"), nb, Bounds.Neighbors, source);
            IReadOnlyList<GemmMeasurement> gemm = [];
            if (gemmPath is not null)
            {
                var rows = MeasurementCsv.ReadGemm(Existing(CalibrationData.Resolve(gemmPath, source, r.Child("gemm")), r.Child("gemm"), source));
                (gemm, gpu) = Select(rows, x => x.Gpu, gpu, r.Child("gpu"), "gpu", source);
            }
            else if (gpu is not null) throw new ConfigException(r.Child("gpu"), $"\"{gpu}\"", "filters the \"gemm\" file's rows; give \"gemm\" too", source);
            IReadOnlyList<CollectiveMeasurement> comm = [];
            if (commPath is not null)
            {
                var rows = MeasurementCsv.ReadCollectives(Existing(CalibrationData.Resolve(commPath, source, r.Child("communication")), r.Child("communication"), source));
                (comm, system) = Select(rows, x => x.System, system, r.Child("system"), "system", source);
            }
            else if (system is not null) throw new ConfigException(r.Child("system"), $"\"{system}\"", "filters the \"communication\" file's rows; give \"communication\" too", source);
            calibration = new CalibrationSpec(gemmPath, gpu, gemm, commPath, system, comm, neighbors ?? 8);
        }
        return Checked(new CostModelSpec(kind, table) { Tiles = tiles, Calibration = calibration, AllToAll = allToAll, DeepEpSms = deepEpSms ?? DefaultDeepEpSms, GroupedGemm = groupedGemm, FusedAttention = fusedAttention, NcclProtocols = protocols, NvlinkContention = nvlinkContention }, path, source);
    }

    private static string Existing(string path, string field, string? source) =>
        File.Exists(path) ? path : throw new ConfigException(field, $"\"{path}\"", "file not found (a measurement CSV)", source);

    /// <summary>Keeps the rows whose column equals <paramref name="wanted"/>; without one, the file must hold a single value.</summary>
    private static (IReadOnlyList<T>, string?) Select<T>(IReadOnlyList<T> rows, Func<T, string> key, string? wanted, string field, string column, string? source)
    {
        var values = rows.Select(key).Distinct(StringComparer.OrdinalIgnoreCase).Order(StringComparer.Ordinal).ToArray();
        if (wanted is null)
        {
            if (values.Length > 1)
                throw new ConfigException(field, null, $"is required: the file's {column} column holds {values.Length} values ({string.Join(", ", values.Select(v => $"\"{v}\""))}); name one", source);
            return (rows, values.FirstOrDefault());
        }
        var kept = rows.Where(x => string.Equals(key(x), wanted, StringComparison.OrdinalIgnoreCase)).ToArray();
        if (kept.Length == 0)
            throw new ConfigException(field, $"\"{wanted}\"", $"matches no row; the file's {column} column holds {string.Join(", ", values.Select(v => $"\"{v}\""))}", source);
        return (kept, wanted);
    }

    private static CostModelSpec Checked(CostModelSpec spec, string path, string? source)
    {
        if (spec.Kind == CostModelKind.RooflineEfficiency && spec.Efficiency is null)
            throw new ConfigException($"{path}.efficiency", null, "is required for kind \"roofline-efficiency\" (a table name such as \"typical-hopper\" or an inline table)", source);
        if (spec.Kind != CostModelKind.RooflineEfficiency && spec.Efficiency is not null)
            throw new ConfigException($"{path}.efficiency", $"\"{spec.Efficiency.Name}\"", "applies only to kind \"roofline-efficiency\"", source);
        if (spec.Kind == CostModelKind.Calibrated && spec.Calibration is null)
            throw new ConfigException($"{path}.gemm", null, "kind \"calibrated\" needs \"gemm\" and/or \"communication\" measurement files", source);
        return spec;
    }

    public override string ToString() => Kind switch
    {
        CostModelKind.RooflineEfficiency when Efficiency is not null => $"roofline-efficiency({Efficiency.Name})",
        CostModelKind.TileWave => Tiles is null ? "tile-wave" : $"tile-wave({Tiles.Name})",
        CostModelKind.Calibrated when Calibration is not null => $"calibrated({Calibration.GemmPath ?? "-"}{(Calibration.Gpu is null ? "" : $" [{Calibration.Gpu}]")}; {Calibration.CommunicationPath ?? "-"}{(Calibration.System is null ? "" : $" [{Calibration.System}]")})",
        _ => JsonObjectReader.Kebab(Kind.ToString()),
    };
}

/// <summary>The inputs of a cost model's communication side other than the hardware (<see cref="CostModelSpec.Communication"/>).</summary>
internal readonly struct CommunicationKey(AllToAllImplementation allToAll, NcclTuning? nccl, bool nvlinkContention, CalibrationSpec? calibration)
{
    private readonly AllToAllImplementation _allToAll = allToAll;
    private readonly NcclTuning? _nccl = nccl;
    private readonly bool _nvlinkContention = nvlinkContention;
    private readonly CalibrationSpec? _calibration = calibration;

    /// <summary>Same inputs: the tables and measurements by reference (a miss only costs a recomputation).</summary>
    public bool Same(in CommunicationKey other) => _allToAll == other._allToAll && ReferenceEquals(_nccl, other._nccl)
        && _nvlinkContention == other._nvlinkContention && ReferenceEquals(_calibration, other._calibration);
}
