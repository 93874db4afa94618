# Compiles GLSL compute shaders to SPIR-V with glslangValidator and wraps each in a C header
# (a uint32_t array named after the variant), so no shader file is read at run time.
find_program(GLSLANG_VALIDATOR glslangValidator REQUIRED)
set(SOFTPICK_GENERATED_DIR ${CMAKE_CURRENT_BINARY_DIR}/generated)
file(MAKE_DIRECTORY ${SOFTPICK_GENERATED_DIR}/shaders)

# softpick_add_shaders(target SOURCE.comp:VARIANT_NAME[:DEFINE[,DEFINE...]] ...)
function(softpick_add_shaders target)
  file(GLOB shader_includes ${CMAKE_CURRENT_SOURCE_DIR}/shaders/*.glsl) # every variant rebuilds when one changes
  set(outputs)
  set(includes "")
  set(names "")
  foreach(spec IN LISTS ARGN)
    string(REPLACE ":" ";" parts "${spec}")
    list(GET parts 0 source)
    list(GET parts 1 name)
    set(defines)
    list(LENGTH parts nparts)
    if(nparts GREATER 2)
      list(GET parts 2 deflist)
      string(REPLACE "," ";" deflist "${deflist}")
      foreach(d IN LISTS deflist)
        list(APPEND defines "-D${d}")
      endforeach()
    endif()
    set(out ${SOFTPICK_GENERATED_DIR}/shaders/${name}.h)
    add_custom_command(OUTPUT ${out}
      COMMAND ${GLSLANG_VALIDATOR} -V --target-env vulkan1.1 ${defines} --vn spk_spirv_${name}
              -o ${out} ${CMAKE_CURRENT_SOURCE_DIR}/shaders/${source}
      DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/shaders/${source} ${shader_includes}
      COMMENT "SPIR-V ${name} from ${source}" VERBATIM)
    list(APPEND outputs ${out})
    string(APPEND includes "#include \"shaders/${name}.h\"\n")
    string(APPEND names " X(${name})")
  endforeach()
  file(WRITE ${SOFTPICK_GENERATED_DIR}/shaders_all.h.in "/* Generated: every embedded SPIR-V variant, and X(name) for each. */\n${includes}#define SPK_SPIRV_ALL(X)${names}\n")
  configure_file(${SOFTPICK_GENERATED_DIR}/shaders_all.h.in ${SOFTPICK_GENERATED_DIR}/shaders_all.h COPYONLY)
  add_custom_target(${target} DEPENDS ${outputs})
endfunction()
