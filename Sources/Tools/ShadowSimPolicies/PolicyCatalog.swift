import ShadowMMU
import KVMUnsync
import WPEmulate
import GlobalList
import VMList
import XenOOS
import TDP
import PVMMU
import Agile
import Synchronization
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A way to make one policy object per VM.
public struct PolicyFactory: Sendable {
    public let name: String
    public let summary: String
    /// Where it came from: "built-in" or the .so path.
    public let origin: String
    /// Whether its VMs get shadow pages (false: nested paging, no shadow MMU work).
    public let shadowsGuestTables: Bool
    public let make: @Sendable () throws(PolicyLoadError) -> any SyncPolicy
}

/// Why a policy could not be had.
public struct PolicyLoadError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(description: String) { self.description = description }
}

/// The policies a VM can run under: built in by name, or loaded from a `.so`.
public enum PolicyCatalog {
    /// No hypervisor: the vCPUs walk the guest's own tables (the x86 reference machine).
    public static let bareMetalName = "bare-metal"

    public static let builtins: [PolicyFactory] = [
        builtin(KVMUnsync()) { KVMUnsync() },
        builtin(WPEmulate()) { WPEmulate() },
        builtin(GlobalList()) { GlobalList() },
        builtin(VMList()) { VMList() },
        builtin(XenOOS()) { XenOOS() },
        builtin(TDP()) { TDP() },
        builtin(PVMMU()) { PVMMU() },
        builtin(Agile()) { Agile() },
    ]

    private static func builtin(_ sample: any SyncPolicy, _ make: @escaping @Sendable () -> any SyncPolicy) -> PolicyFactory {
        PolicyFactory(name: sample.name, summary: sample.summary, origin: "built-in",
                      shadowsGuestTables: sample.rootWalk == .shadow, make: { () throws(PolicyLoadError) in make() })
    }

    /// Refuses planting `bug` under `policy` (a name or .so path) when that policy's code
    /// can never reach it: bare metal and nested paging have no shadow pages, a built-in
    /// policy must be one the bug lists, a plugin must shadow guest tables and the bug
    /// must be in the engine they all share.
    public static func check(_ bug: PlantedBug, under policy: String) throws(PolicyLoadError) {
        let refusal = "bug '\(bug.rawValue)' cannot happen under \(policy): it lives in code only \(bug.policies.joined(separator: ", ")) \(bug.policies.count == 1 ? "runs" : "run")"
        guard policy != bareMetalName else {
            throw PolicyLoadError(description: "bug '\(bug.rawValue)' cannot happen under bare-metal: there is no shadow MMU")
        }
        let factory = try factory(policy)
        if factory.origin == "built-in" {
            guard bug.policies.contains(factory.name) else { throw PolicyLoadError(description: refusal) }
        } else {
            guard factory.shadowsGuestTables, bug.isInEngine else { throw PolicyLoadError(description: refusal) }
        }
    }

    /// A built-in policy by name, or a plugin when `nameOrPath` contains a `/` or ends
    /// in `.so`.
    public static func factory(_ nameOrPath: String) throws(PolicyLoadError) -> PolicyFactory {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".so") { return try PluginLoader.factory(path: nameOrPath) }
        if let f = builtins.first(where: { $0.name == nameOrPath }) { return f }
        let names = ([bareMetalName] + builtins.map(\.name)).joined(separator: ", ")
        throw PolicyLoadError(description: "unknown policy '\(nameOrPath)' (built-in: \(names); or the path of a policy .so)")
    }
}

/// Loads policy plugins through their versioned C entry points. A plugin is never
/// unloaded (Swift code must not be unmapped).
enum PluginLoader {
    static let loaded = Mutex<[String: PolicyFactory]>([:])
    static let log = Logger(label: "shadowsim.plugins")

    static func factory(path: String) throws(PolicyLoadError) -> PolicyFactory {
        if let f = loaded.withLock({ $0[path] }) { return f }
        log.debug("loading policy plugin", metadata: ["path": "\(path)"])
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw PolicyLoadError(description: "cannot load policy plugin \(path): \(dlError())")
        }
        guard let abiSymbol = dlsym(handle, PluginABI.abiSymbol) else {
            throw PolicyLoadError(description: "\(path) is not a ShadowSim policy plugin: it has no \(PluginABI.abiSymbol) entry point")
        }
        let abi = unsafeBitCast(abiSymbol, to: PluginABI.ABIFunction.self)()
        guard abi == PluginABI.version else {
            throw PolicyLoadError(description: "\(path) was built for policy ABI \(abi), this shadowsim has ABI \(PluginABI.version): rebuild the plugin against this ShadowSimCore")
        }
        guard let createSymbol = dlsym(handle, PluginABI.createSymbol) else {
            throw PolicyLoadError(description: "\(path) has no \(PluginABI.createSymbol) entry point")
        }
        let create = unsafeBitCast(createSymbol, to: PluginABI.CreateFunction.self)
        @Sendable func instantiate() throws(PolicyLoadError) -> any SyncPolicy {
            guard let raw = create() else {
                throw PolicyLoadError(description: "\(path): \(PluginABI.createSymbol) returned no policy")
            }
            let object = Unmanaged<AnyObject>.fromOpaque(raw).takeRetainedValue()
            guard let policy = object as? any SyncPolicy else {
                throw PolicyLoadError(description: "\(path): \(PluginABI.createSymbol) returned a \(type(of: object)), not a SyncPolicy (was it built against another copy of ShadowSimCore?)")
            }
            return policy
        }
        let sample = try instantiate()
        let factory = PolicyFactory(name: sample.name, summary: sample.summary, origin: path,
                                    shadowsGuestTables: sample.rootWalk == .shadow, make: instantiate)
        loaded.withLock { $0[path] = factory }
        log.info("loaded policy plugin", metadata: ["path": "\(path)", "policy": "\(sample.name)", "abi": "\(abi)"])
        return factory
    }

    static func dlError() -> String {
        dlerror().map { String(cString: $0) } ?? "unknown error"
    }
}
