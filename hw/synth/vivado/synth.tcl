# Vivado non-project-mode synthesis (and, on request, implementation) of the converter.
#
#   vivado -mode batch -nojournal -source hw/synth/vivado/synth.tcl -tclargs [options]
#   (or `make synth-vivado VIVADO_ARGS="..."` from hw/)
#
# The design is synthesized out of context (synth_design -mode out_of_context): the
# converter is an IP block inside a larger design, so no I/O buffers are inserted and
# the pin count of the package does not limit wide configurations.
#
# Written for the Tcl 8.5 that Vivado embeds (no lmap, try or other 8.6-only commands).
#
# Options (all optional):
#   -part PART        target part (default xc7z020clg400-1, a Zynq-7020)
#   -family NAME      shorthand for a part: zynq7 (xc7z020clg400-1) or
#                     zynqmp (UltraScale+, xczu9eg-ffvb1156-2-e); -part wins over -family
#   -lanes N          mpconv_top LANES (default 1)
#   -word_w W         mpconv_top WORD_W: 16, 32 or 64 (default 32)
#   -bf16 0|1         mpconv_top BF16: 0 = fp32, 1 = bfloat16 float side (default 0)
#   -fifo_depth D     mpconv_top FIFO_DEPTH, a power of two (default 512)
#   -period NS        target period of the clock on port clk in ns (default 10.0)
#   -io_budget F      fraction of the period the logic outside the block takes on each side
#                     (default 0.4): every input but clk arrives F * period after the clock
#                     edge, every output must be valid F * period before the next one
#                     (set_input_delay / set_output_delay), so paths through the ports are
#                     timed too
#   -xdc FILE         extra constraints file, read after the clock (repeatable)
#   -impl             also run opt_design, place_design and route_design
#   -out DIR          results folder (default hw/synth/results/vivado/<configuration>)
#   -sources FILE     source list, one Verilog file per line relative to the list
#                     (default hw/rtl/sources.f)
#   -top NAME         top module (default mpconv_top)
#   -help             print this help
#
# Results: clock.xdc (the applied clock and I/O delays), utilization_synth.rpt, utilization_synth_hier.rpt,
# timing_synth.rpt, post_synth.dcp and, with -impl, the same for the routed design
# (*_route.rpt, post_route.dcp), plus summary.txt (part, parameters, worst slack).

namespace eval mpconv_synth {
    variable here [file dirname [file normalize [info script]]]
    variable parts [dict create zynq7 xc7z020clg400-1 zynqmp xczu9eg-ffvb1156-2-e]
}

# One clear line and exit status 2, like every command line of the project.
proc mpconv_synth::fail {message} {
    puts stderr "error: $message"
    exit 2
}

proc mpconv_synth::usage {} {
    variable here
    set text [open [file join $here synth.tcl] r]
    set lines {}
    while {[gets $text line] >= 0} {
        if {![string match "#*" $line]} break
        lappend lines [string range $line 2 end]
    }
    close $text
    puts [join $lines "\n"]
}

proc mpconv_synth::require_int {option value {allowed {}}} {
    if {![string is integer -strict $value] || $value < 1} {
        fail "option $option: expected a positive integer, got '$value'"
    }
    if {[llength $allowed] && [lsearch -exact $allowed $value] < 0} {
        fail "option $option: expected one of [join $allowed {, }], got '$value'"
    }
}

# Parse ::argv into a dict of settings.
proc mpconv_synth::parse_args {argv} {
    variable here
    variable parts
    set opts [dict create part {} family zynq7 lanes 1 word_w 32 bf16 0 fifo_depth 512 \
        period 10.0 io_budget 0.4 xdc {} impl 0 out {} top mpconv_top \
        sources [file normalize [file join $here .. .. rtl sources.f]]]
    set valued {-part -family -lanes -word_w -bf16 -fifo_depth -period -io_budget -xdc -out -sources -top}
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set option [lindex $argv $i]
        if {$option eq "-help" || $option eq "--help"} {
            usage
            exit 0
        }
        if {$option eq "-impl"} {
            dict set opts impl 1
            continue
        }
        if {[lsearch -exact $valued $option] < 0} {
            fail "unknown option '$option' (expected one of -impl -help [join $valued { }])"
        }
        incr i
        if {$i >= [llength $argv]} {
            fail "option $option: expected a value after it"
        }
        set value [lindex $argv $i]
        set key [string range $option 1 end]
        if {$key eq "xdc"} {
            dict lappend opts xdc [file normalize $value]
        } elseif {$key in {out sources}} {
            dict set opts $key [file normalize $value]
        } else {
            dict set opts $key $value
        }
    }

    require_int -lanes [dict get $opts lanes]
    require_int -word_w [dict get $opts word_w] {16 32 64}
    if {[dict get $opts bf16] ni {0 1}} {
        fail "option -bf16: expected 0 (fp32) or 1 (bfloat16), got '[dict get $opts bf16]'"
    }
    set depth [dict get $opts fifo_depth]
    require_int -fifo_depth $depth
    if {$depth < 2 || ($depth & ($depth - 1)) != 0} {
        fail "option -fifo_depth: expected a power of two >= 2, got '$depth'"
    }
    set period [dict get $opts period]
    if {![string is double -strict $period] || $period <= 0} {
        fail "option -period: expected a clock period in ns > 0, got '$period'"
    }
    set budget [dict get $opts io_budget]
    if {![string is double -strict $budget] || $budget < 0 || $budget >= 1} {
        fail "option -io_budget: expected a fraction of the period in \[0, 1), got '$budget'"
    }
    if {[dict get $opts part] eq ""} {
        set family [dict get $opts family]
        if {![dict exists $parts $family]} {
            fail "option -family: expected one of [join [dict keys $parts] {, }], got '$family'"
        }
        dict set opts part [dict get $parts $family]
    }
    foreach xdc [dict get $opts xdc] {
        if {![file isfile $xdc]} {
            fail "option -xdc: constraints file $xdc does not exist"
        }
    }
    if {[dict get $opts out] eq ""} {
        set float [expr {[dict get $opts bf16] ? "bf16" : "fp32"}]
        set name "L[dict get $opts lanes]_W[dict get $opts word_w]_${float}_[dict get $opts part]"
        if {$depth != 512} {
            append name "_D$depth"
        }
        dict set opts out [file normalize [file join $here .. results vivado $name]]
    }
    return $opts
}

# The Verilog files of a source list: one path per line, relative to the list's folder;
# blank lines and lines starting with # or // are skipped.
proc mpconv_synth::read_source_list {list_file} {
    if {![file isfile $list_file]} {
        fail "source list $list_file does not exist (expected one Verilog file per line)"
    }
    set base [file dirname $list_file]
    set handle [open $list_file r]
    set files {}
    set number 0
    while {[gets $handle line] >= 0} {
        incr number
        set line [string trim $line]
        if {$line eq "" || [string match "#*" $line] || [string match "//*" $line]} continue
        set path [file normalize [file join $base $line]]
        if {![file isfile $path]} {
            close $handle
            fail "$list_file line $number: $line does not exist"
        }
        lappend files $path
    }
    close $handle
    if {![llength $files]} {
        fail "source list $list_file names no Verilog file"
    }
    return $files
}

# Worst setup slack of the open design in ns, or "n/a" when no path is constrained.
proc mpconv_synth::worst_slack {} {
    set paths [get_timing_paths -delay_type max -max_paths 1 -nworst 1]
    if {$paths eq ""} {
        return n/a
    }
    return [get_property SLACK $paths]
}

proc mpconv_synth::write_reports {out stage} {
    report_utilization -file [file join $out utilization_$stage.rpt]
    report_utilization -hierarchical -file [file join $out utilization_${stage}_hier.rpt]
    report_timing_summary -max_paths 10 -file [file join $out timing_$stage.rpt]
}

proc mpconv_synth::run {argv} {
    set opts [parse_args $argv]
    set out [dict get $opts out]
    set sources [read_source_list [dict get $opts sources]]
    file mkdir $out

    # The target clock and the I/O delays, written next to the reports so each result
    # records what it met.
    set period [format %.3f [dict get $opts period]]
    set io_delay [format %.3f [expr {$period * [dict get $opts io_budget]}]]
    set clock_xdc [file join $out clock.xdc]
    set handle [open $clock_xdc w]
    puts $handle "# Target clock and I/O delays of [dict get $opts top] (written by hw/synth/vivado/synth.tcl)."
    puts $handle "create_clock -name clk -period $period \[get_ports clk\]"
    puts $handle "# The logic around the block takes [dict get $opts io_budget] of the period on each side."
    puts $handle "set_input_delay -clock \[get_clocks clk\] $io_delay \[remove_from_collection \[all_inputs\] \[get_ports clk\]\]"
    puts $handle "set_output_delay -clock \[get_clocks clk\] $io_delay \[all_outputs\]"
    close $handle

    foreach source $sources {
        read_verilog $source
    }
    read_xdc -mode out_of_context $clock_xdc
    foreach xdc [dict get $opts xdc] {
        read_xdc -mode out_of_context $xdc
    }

    set generics {}
    foreach {name key} {LANES lanes WORD_W word_w BF16 bf16 FIFO_DEPTH fifo_depth} {
        lappend generics -generic "$name=[dict get $opts $key]"
    }
    synth_design -top [dict get $opts top] -part [dict get $opts part] \
        -mode out_of_context -flatten_hierarchy rebuilt {*}$generics
    write_checkpoint -force [file join $out post_synth.dcp]
    write_reports $out synth
    set values {}
    foreach {flag value} $generics {
        lappend values $value
    }
    set summary [list "top [dict get $opts top]" "part [dict get $opts part]" \
        "generics [join $values { }]" "period_ns $period" "io_delay_ns $io_delay" \
        "wns_synth_ns [worst_slack]"]

    if {[dict get $opts impl]} {
        opt_design
        place_design
        route_design
        write_checkpoint -force [file join $out post_route.dcp]
        write_reports $out route
        lappend summary "wns_route_ns [worst_slack]"
    }

    set handle [open [file join $out summary.txt] w]
    puts $handle [join $summary "\n"]
    close $handle
    puts "mpconv synthesis done: reports in $out"
    puts [join $summary "\n"]
}

mpconv_synth::run $::argv
